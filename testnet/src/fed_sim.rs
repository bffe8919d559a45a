//! `testnet fed-sim`: the federation at scale, with the real document, message and placement
//! code and no network. N pools of M members (each member's node offering storage), each pool
//! federating with 3 others (a Möbius ladder: pool i with i-1, i+1 and i+N/2), every agreement
//! lending storage and CDN both ways, signed, recorded in both pools' documents, with both
//! sides' rosters. Reported:
//!
//! - the size of a pool's document, and what its agreements and rosters add;
//! - the federation's control traffic per pool per day in steady state: the real encoded sizes
//!   of `kith/fed/1` requests and answers times the cadences in the code (partners' holders
//!   asked, edges asking for sites, sealed copies sent);
//! - after losing one whole pool: the bytes re-placed by the real placement code (rendezvous
//!   over the partners' holders, weighted by shares) against the bytes of off-site copies the
//!   lost pool held, and the bytes its own members fetch back from its partners.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result};
use kith_crdt::{Key, Signer};
use kith_federation::{Acceptance, Agreement, Lend, Offer, Price, Roster};
use kith_pools::Pool;
use kith_pools::fed::{Asking, FedReply, FedRequest, OffsiteHolder};
use kith_pools::placement::{Holder, place};
use serde::Serialize;

use crate::figures::round;

/// A pool's documents start here (ms since the epoch: 2027-01-15).
const T0: i64 = 1_800_000_000_000;
const GIB: f64 = (1u64 << 30) as f64;

/// What the simulation found.
#[derive(Debug, Clone, Serialize)]
pub struct SimFigures {
    /// `"fed-sim"`.
    pub bench: &'static str,
    /// Pools.
    pub pools: usize,
    /// Members per pool.
    pub members: usize,
    /// Partners per pool.
    pub partners: usize,
    /// Agreements in the federation.
    pub agreements: usize,
    /// Building every pool's document, agreements and rosters (s).
    pub build_s: f64,
    /// A pool's document (KB), with its agreements and rosters.
    pub pool_doc_kb: f64,
    /// What its agreements and rosters add to it (KB).
    pub federation_kb: f64,
    /// One roster of M members (KB).
    pub roster_kb: f64,
    /// A `Holders` question and its answer (KB).
    pub holders_exchange_kb: f64,
    /// The same question asked again with the last answer's digest, and its answer when the
    /// holders did not change (KB).
    pub holders_again_kb: f64,
    /// A `Sites` question and its answer with one site (KB).
    pub sites_exchange_kb: f64,
    /// A sealed copy of a pool's documents (KB; the pool document and M identity documents).
    pub sealed_kb: f64,
    /// Per pool per day: partners' holders asked by its placing nodes (MB).
    pub holders_mb_day: f64,
    /// Per pool per day: its edge nodes asking partners for sites (MB).
    pub edges_mb_day: f64,
    /// Per pool per day: sealed copies sent to partners' holders, the documents unchanged (MB;
    /// each change sends them again, at most every 30 s).
    pub sealed_mb_day: f64,
    /// The sum (MB per pool per day).
    pub control_mb_day: f64,
    /// Data each pool keeps off-site (GiB).
    pub pool_data_gib: f64,
    /// Off-site copies the lost pool held for its partners (GiB).
    pub lost_gib: f64,
    /// Bytes re-placed once it is given up (GiB).
    pub repair_gib: f64,
    /// Repair over lost (goal: at most 1.2).
    pub repair_over_lost: f64,
    /// Copies that moved although their holder was not lost (should be none).
    pub needless_moves: usize,
    /// What the lost pool's members fetch back from its partners (GiB, one copy).
    pub restore_gib: f64,
}

fn signer(pool: usize, member: usize) -> Signer {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&(pool as u64).to_le_bytes());
    seed[8..16].copy_from_slice(&(member as u64).to_le_bytes());
    let mut dev = seed;
    dev[31] = 9;
    Signer::new(&seed, dev)
}

fn node(pool: usize, member: usize) -> Key {
    *blake3::hash(format!("node {pool} {member}").as_bytes()).as_bytes()
}

/// The partners of pool `i` of `n` (a Möbius ladder: 3 each).
fn partners_of(i: usize, n: usize) -> [usize; 3] {
    [(i + n - 1) % n, (i + 1) % n, (i + n / 2) % n]
}

/// Runs the simulation: `n` pools of `m` members, each member keeping `gib_per_member` GiB
/// off-site, `edges` CDN edge nodes per pool, `blobs` sampled blobs per pool for placement.
pub fn run(
    n: usize,
    m: usize,
    gib_per_member: u64,
    edges: usize,
    blobs: usize,
) -> Result<SimFigures> {
    anyhow::ensure!(n >= 4 && n.is_multiple_of(2), "an even number of pools, at least 4");
    anyhow::ensure!(m >= 1, "at least one member");
    let t = Instant::now();
    let offer = kith_pools::Offer { storage: 100 << 30, egress: 0, zone: String::new() };
    let mut pools: Vec<Pool> = Vec::with_capacity(n);
    let mut bare_kb = 0.0;
    for i in 0..n {
        let admin = signer(i, 0);
        let mut p = Pool::create(&admin, "m0", Pool::charter(&format!("p{i}")), T0)?;
        if m > 1 {
            let inv =
                p.invite(&admin, [(i % 256) as u8; 16], (T0 + 86_400_000) as u64, m as u32)?;
            for k in 1..m {
                p.join(&signer(i, k), &format!("m{k}"), &inv, T0 + k as i64)?;
            }
        }
        for k in 0..m {
            p.offer(&signer(i, k), &node(i, k), &offer, T0 + (m + k) as i64)?;
        }
        if i == 0 {
            bare_kb = p.save().len() as f64 / 1e3;
        }
        pools.push(p);
    }
    // Agreements: i with i+1 (a ring), and i with i+n/2 for the first half.
    let mut edges_list: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
    edges_list.extend((0..n / 2).map(|i| (i, i + n / 2)));
    let lend = Lend { storage: 1 << 40, egress: 0, cdn: true, relay: false };
    let t1 = T0 + 10_000;
    let mut agreements: Vec<Agreement> = Vec::new();
    for (x, &(i, j)) in edges_list.iter().enumerate() {
        let (ai, aj) = (signer(i, 0), signer(j, 0));
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(x as u64).to_le_bytes());
        let (pi, pj) = (pools[i].id(), pools[j].id());
        let at = t1 + 10 * x as i64;
        let o = Offer::sign(
            &ai,
            id,
            pi,
            &format!("p{i}"),
            lend,
            Price::default(),
            365,
            30,
            (at + 3_600_000) as u64,
            vec![],
        );
        pools[i].add_fed_offer(&ai, &o, at)?;
        let a = Acceptance::sign(&aj, &o, pj, &format!("p{j}"), lend, (at + 1) as u64, vec![]);
        let ag = Agreement { offer: o, acceptance: a };
        pools[j].add_agreement(&aj, &ag, at + 2)?;
        pools[i].add_agreement(&ai, &ag, at + 3)?;
        pools[i].renew_roster(&ai, &ag.id(), at + 4)?;
        pools[j].renew_roster(&aj, &ag.id(), at + 5)?;
        agreements.push(ag);
    }
    let build_s = t.elapsed().as_secs_f64();
    let pool_doc_kb = pools[0].save().len() as f64 / 1e3;
    let v0 = pools[0].view();
    let (ag0, e0) = v0.federation.agreements.iter().next().context("no agreement")?;
    let roster: Roster = e0.roster.clone().context("no roster")?;
    let roster_kb = roster.to_bytes().len() as f64 / 1e3;

    // Messages, encoded as they cross.
    let admin = signer(0, 0);
    let asking = Asking {
        agreement: *ag0,
        roster: roster.clone(),
        identity: admin.author().key,
        sig: admin.sign(b"a node's proof"),
    };
    let partner_roster = {
        let (p, _) = e0.agreement.partner_of(&pools[0].id()).context("partner")?;
        let j = (0..n).find(|j| pools[*j].id() == p).context("partner pool")?;
        pools[j].view().federation.agreements[ag0].roster.clone()
    };
    let ticket = |k: usize| -> Result<String> {
        let id = iroh::SecretKey::from_bytes(&node(1, k)).public();
        let addrs = vec!["192.168.1.20:7781".parse()?, "[fd00::20]:7781".parse()?];
        Ok(kith_node::net::ticket::NodeTicket { id, addrs }.to_string())
    };
    let holders: Vec<OffsiteHolder> = (0..m)
        .map(|k| {
            Ok(OffsiteHolder { node: node(1, k).into(), share: 20 << 30, ticket: Some(ticket(k)?) })
        })
        .collect::<Result<_>>()?;
    let len = |x: &[u8]| x.len() as f64 / 1e3;
    let req = minicbor::to_vec(FedRequest::Holders(Box::new(asking.clone()), None))?;
    let answer = FedReply::Holders { roster: partner_roster.clone(), holders };
    let holders_exchange_kb = len(&req) + len(&minicbor::to_vec(&answer)?);
    let again = FedRequest::Holders(Box::new(asking.clone()), Some(answer.digest().into()));
    let holders_again_kb =
        len(&minicbor::to_vec(again)?) + len(&minicbor::to_vec(FedReply::Unchanged)?);
    let site = kith_pools::replica::SiteHead {
        name: "bakery".into(),
        number: 12,
        index: [1; 32],
        key: [2; 32],
        len: 4096,
        files: 40,
        bytes: 20 << 20,
        at_ms: T0,
        manifest: [3; 32],
    };
    let heads = kith_pools::replica::SiteHeads {
        agreement: *ag0,
        pool: pools[0].id(),
        at_ms: T0,
        heads: vec![site],
    };
    let sreq = minicbor::to_vec(FedRequest::Sites(Box::new(asking)))?;
    let srep = minicbor::to_vec(FedReply::Sites {
        roster: partner_roster,
        heads: Box::new(heads),
        identity: admin.author().key,
        sig: admin.sign(b"sites"),
    })?;
    let sites_exchange_kb = len(&sreq) + len(&srep);
    // A sealed copy: the pool document and every member's identity document (a fresh one
    // each: real ones carry devices and data keys, so this is a lower bound), age-encrypted.
    let mut identities = 0usize;
    for k in 0..m {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&(k as u64).to_le_bytes());
        identities += kith_pools::identity::IdentityDoc::genesis(&seed)?.save().len();
    }
    let sealed_kb = pool_doc_kb + identities as f64 / 1e3;

    // Per pool per day, at the cadences in the code.
    let day = 86_400.0;
    let partners = 3.0;
    let every = |d: std::time::Duration| day / d.as_secs_f64();
    // Each asker's question is answered in full once a day (the holders or the roster changed:
    // more often than a steady pool's), and `Unchanged` the other times.
    let asks = every(kith_pools::replica::PARTNERS_EVERY);
    let holders_mb_day =
        m as f64 * partners * (holders_exchange_kb + (asks - 1.0).max(0.0) * holders_again_kb)
            / 1e3;
    // Edges ask every EDGE_POLL, and once more for each change they are told of (not counted:
    // a few a day).
    let edges_mb_day =
        edges as f64 * partners * every(kith_pools::replica::EDGE_POLL) * sites_exchange_kb / 1e3;
    let sealed_mb_day = kith_pools::replica::sealed_targets(3, m) as f64
        * every(kith_pools::replica::SEAL_EVERY)
        * sealed_kb
        / 1e3;
    let control_mb_day = holders_mb_day + edges_mb_day + sealed_mb_day;

    // Placement: each pool's data, sampled, over its partners' holders (zones: the partner
    // pools), weighted by each holder's share of what its pool lends.
    let pool_bytes = m as f64 * gib_per_member as f64 * GIB;
    let per_blob = pool_bytes / blobs as f64;
    let holders_of = |q: usize| -> Vec<Holder> {
        (0..m)
            .map(|k| Holder {
                node: node(q, k),
                member: pools[q].id(),
                zone: format!("p{q}"),
                weight: (1u64 << 40) / m as u64,
            })
            .collect()
    };
    let blob = |i: usize, b: usize| *blake3::hash(format!("blob {i} {b}").as_bytes()).as_bytes();
    let lost_pool = 0;
    let lost_nodes: std::collections::HashSet<Key> = (0..m).map(|k| node(lost_pool, k)).collect();
    let (mut lost, mut moved, mut needless) = (0usize, 0usize, 0usize);
    for i in (0..n).filter(|i| *i != lost_pool) {
        let ps = partners_of(i, n);
        if !ps.contains(&lost_pool) {
            continue;
        }
        let before: Vec<Holder> = ps.iter().flat_map(|q| holders_of(*q)).collect();
        let after: Vec<Holder> =
            ps.iter().filter(|q| **q != lost_pool).flat_map(|q| holders_of(*q)).collect();
        for b in 0..blobs {
            let id = blob(i, b);
            let was = place(&id, &before, 1)[0].node;
            let now = place(&id, &after, 1)[0].node;
            if lost_nodes.contains(&was) {
                lost += 1;
            }
            if was != now {
                moved += 1;
                if !lost_nodes.contains(&was) {
                    needless += 1;
                }
            }
        }
    }
    let lost_gib = lost as f64 * per_blob / GIB;
    let repair_gib = moved as f64 * per_blob / GIB;
    let r3 = |x: f64| round(x, 3);
    Ok(SimFigures {
        bench: "fed-sim",
        pools: n,
        members: m,
        partners: 3,
        agreements: agreements.len(),
        build_s: r3(build_s),
        pool_doc_kb: round(pool_doc_kb, 1),
        federation_kb: round(pool_doc_kb - bare_kb, 1),
        roster_kb: round(roster_kb, 2),
        holders_exchange_kb: round(holders_exchange_kb, 2),
        holders_again_kb: round(holders_again_kb, 2),
        sites_exchange_kb: round(sites_exchange_kb, 2),
        sealed_kb: round(sealed_kb, 1),
        holders_mb_day: round(holders_mb_day, 1),
        edges_mb_day: round(edges_mb_day, 1),
        sealed_mb_day: round(sealed_mb_day, 1),
        control_mb_day: round(control_mb_day, 1),
        pool_data_gib: round(pool_bytes / GIB, 1),
        lost_gib: round(lost_gib, 1),
        repair_gib: round(repair_gib, 1),
        repair_over_lost: r3(repair_gib / lost_gib.max(1e-9)),
        needless_moves: needless,
        restore_gib: round(pool_bytes / GIB, 1),
    })
}

/// A markdown summary.
pub fn markdown(f: &SimFigures) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| {} pools of {} members, {} partners each ({} agreements) | figure |",
        f.pools, f.members, f.partners, f.agreements
    );
    let _ = writeln!(o, "| --- | ---: |");
    let _ = writeln!(o, "| building every document, agreement and roster | {:.1} s |", f.build_s);
    let _ = writeln!(
        o,
        "| a pool's document / what its 3 agreements and rosters add | {:.1} / {:.1} KB |",
        f.pool_doc_kb, f.federation_kb
    );
    let _ = writeln!(o, "| one roster of {} members | {:.2} KB |", f.members, f.roster_kb);
    let _ = writeln!(
        o,
        "| `Holders` asked and answered / again, unchanged / `Sites` asked and answered | {:.2} / {:.2} / {:.2} KB |",
        f.holders_exchange_kb, f.holders_again_kb, f.sites_exchange_kb
    );
    let _ =
        writeln!(o, "| a sealed copy of a pool's documents (at least) | {:.1} KB |", f.sealed_kb);
    let _ = writeln!(
        o,
        "| control traffic per pool per day: holders / edges / sealed copies | {:.1} / {:.1} / {:.1} MB |",
        f.holders_mb_day, f.edges_mb_day, f.sealed_mb_day
    );
    let _ = writeln!(
        o,
        "| control traffic per pool per day, in all | **{:.1} MB** |",
        f.control_mb_day
    );
    let _ = writeln!(
        o,
        "| one pool lost: off-site copies it held for partners / re-placed | {:.1} / {:.1} GiB (**{:.2}x**, {} needless moves) |",
        f.lost_gib, f.repair_gib, f.repair_over_lost, f.needless_moves
    );
    let _ = writeln!(
        o,
        "| the lost pool's own data fetched back from its partners | {:.1} GiB (1 copy) |",
        f.restore_gib
    );
    o
}
