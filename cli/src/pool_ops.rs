//! Pool commands, run in the daemon: they need the node to reach the other members.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use kith_crdt::hex;
use kith_node::Home;
use kith_pools::docs::{Pools, encode_ticket};
use kith_pools::leave;
use kith_pools::replica::{PoolPut, Replicator};
use kith_pools::{Offer, Pool, PoolView, parse_size};
use serde_json::Value;

use crate::api::pools::*;
use crate::wire::{Frame, Out};

pub use crate::api::PoolReq;

/// Longest invite lifetime accepted.
const MAX_INVITE_LIFETIME_MS: u64 = 365 * 24 * 3_600_000;

/// Makes the pools service for a home.
pub fn open(home: &Home, clock: kith_node::Clock) -> Result<Arc<Pools>> {
    let identity = home.identity()?;
    let node = home.node_key()?;
    let node_secret = node.secret().to_bytes();
    // Signed with the node's own key: certified on the spot where this device holds the
    // identity key, else by the certificate it was given when it was imported.
    let (signer, genesis_sig) = match (identity.signing_key(), identity.grant()) {
        (Some(k), _) => (kith_crdt::Signer::with_device(&k.to_bytes(), &node_secret), None),
        (None, Some(g)) if g.node == *node.id().as_bytes() => {
            let derived = g.derived.iter().cloned().collect();
            let id = *identity.id().as_bytes();
            (kith_crdt::Signer::device_only(id, &node_secret, g.cert, derived), Some(g.genesis_sig))
        }
        (None, _) => bail!(
            "{} was made for another node key than this home's; import the identity again \
             (`kith init --import`) in a new home",
            home.identity_path().display()
        ),
    };
    let pools = Pools::load(home.root(), signer, *node.id().as_bytes(), clock)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let device = if host.is_empty() { "device".to_string() } else { host };
    pools.init_identity(genesis_sig, &device, &identity.recipient().to_string())?;
    Ok(Arc::new(pools))
}

/// Data keys the identity makes (after a device is retired) go to `store`: new objects are
/// sealed to the newest, and the key file keeps them.
pub fn keep_data_keys(pools: &Pools, store: &Arc<kith_node::Store>) {
    let store = store.clone();
    pools.set_data_key_sink(Box::new(move |keys| {
        store.set_data_keys(&keys).map(|_| ()).map_err(|e| e.to_string())
    }));
}

/// What a device imported without the identity key is given by it (see
/// [`kith_node::keys::DeviceGrant`]).
pub fn device_grant(
    identity: &kith_node::Identity,
    node: &kith_node::keys::NodeKey,
) -> Result<kith_node::keys::DeviceGrant> {
    let root = identity
        .signing_key()
        .ok_or_else(|| anyhow!("this identity holds no identity key to certify a device with"))?;
    let signer = kith_crdt::Signer::new(&root.to_bytes(), [0; 32]);
    let node_id = *node.id().as_bytes();
    Ok(kith_node::keys::DeviceGrant {
        node: node_id,
        cert: signer.certify(&node_id).expect("the signer holds the key"),
        derived: kith_pools::IDENTITY_KEY_CONTEXTS
            .iter()
            .map(|c| (c.to_string(), signer.derive_key(c)))
            .collect(),
        genesis_sig: kith_pools::identity::IdentityDoc::genesis_sig(&signer)
            .expect("the signer holds the key"),
    })
}

/// Parses `24h`, `30m`, `7d`, `90s` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64> {
    kith_pools::parse_duration_ms(s).map_err(|e| anyhow!(e))
}

fn display(pools: &Pools, given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("member-{}", &hex(&pools.signer().author().key)[..8]))
}

/// Runs a pool command.
pub async fn handle(
    pools: &Arc<Pools>,
    rep: &Arc<Replicator>,
    node: Option<&Arc<kith_node::net::Node>>,
    own_relays: &[String],
    req: PoolReq,
    out: &Out,
) -> Result<Value> {
    let now = pools.now_ms() as u64;
    let signer = pools.signer();
    let running =
        || node.ok_or_else(|| anyhow!("kith is not running here; start it with `kith up`"));
    match req {
        PoolReq::Create { name, replicas, quota, display: d } => {
            if name.trim().is_empty() || name.len() > 64 {
                bail!("a pool name must be 1 to 64 characters");
            }
            let mut charter = Pool::charter(&name);
            if let Some(r) = replicas {
                if r == 0 {
                    bail!("--replicas must be at least 1");
                }
                charter.replicas = r;
            }
            if let Some(q) = quota {
                charter.quota = parse_size(&q).map_err(|e| anyhow!(e))?;
            }
            let named = d.clone();
            let id = pools.create(&display(pools, d), charter)?;
            remember_pool(pools, &id, &name, named.as_deref())?;
            answer(PoolRef { id: hex(&id), name })
        }
        PoolReq::Invite { pool, expires, uses } => {
            let life = parse_duration_ms(&expires)?;
            if life == 0 || life > MAX_INVITE_LIFETIME_MS {
                bail!("--expires must be between 1s and 365d");
            }
            let mut id = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
                .map_err(|_| anyhow!("no randomness"))?;
            let inv = pools.with_pool(&pool, |p| p.invite(signer, id, now + life, uses))?;
            answer(Ticket {
                ticket: encode_ticket(&inv, &running()?.ticket()),
                expires_ms: now + life,
                uses,
            })
        }
        PoolReq::Join { ticket, display: d } => {
            // Remember the inviting node, so this node can reach it again to sync.
            let (_, inviter) = kith_pools::docs::decode_ticket(&ticket).map_err(|e| anyhow!(e))?;
            running()?
                .add_peer(&inviter)
                .await
                .map_err(|e| anyhow!("cannot reach the inviting node: {e}"))?;
            let named = d.clone();
            let id = pools.join(&ticket, &display(pools, d)).await?;
            let name = pools.with_pool(&hex(&id), |p| Ok(p.view().charter.name))?;
            remember_pool(pools, &id, &name, named.as_deref())?;
            answer(PoolRef { id: hex(&id), name })
        }
        PoolReq::FedInvite {
            pool,
            lend,
            price_storage,
            price_egress,
            term_days,
            notice_days,
            expires,
        } => {
            let life = parse_duration_ms(&expires)?;
            if life == 0 || life > MAX_INVITE_LIFETIME_MS {
                bail!("--expires must be between 1s and 365d");
            }
            let lend = fed_lend(&lend)?;
            let contact = contacts(running()?, &lend, own_relays);
            let price = kith_federation::Price {
                storage_per_gib_month: price(&price_storage)?,
                egress_per_gb: price(&price_egress)?,
            };
            let mut id = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
                .map_err(|_| anyhow!("no randomness"))?;
            let offer = pools.with_pool(&pool, |p| {
                let v = p.view();
                admin_here(&v, signer)?;
                let o = kith_federation::Offer::sign(
                    signer,
                    id,
                    p.id(),
                    &v.charter.name,
                    lend,
                    price,
                    term_days,
                    notice_days,
                    now + life,
                    contact,
                );
                o.check(now).map_err(|e| kith_pools::PoolError::Policy(e.to_string()))?;
                p.add_fed_offer(signer, &o, now as i64)?;
                Ok(o)
            })?;
            answer(FedTicket {
                ticket: offer.to_ticket(),
                agreement: None,
                expires_ms: Some(now + life),
                recorded_by: None,
                not_delivered: None,
                warning: no_relay_named(&lend, &offer.contact),
            })
        }
        PoolReq::FedJoin { pool, ticket, lend } => {
            let offer = kith_federation::Offer::from_ticket(&ticket).map_err(|e| anyhow!(e))?;
            offer.check(now).map_err(|e| anyhow!(e))?;
            let lend = fed_lend(&lend)?;
            let contact = contacts(running()?, &lend, own_relays);
            let ag = pools.with_pool(&pool, |p| {
                let v = p.view();
                admin_here(&v, signer)?;
                if offer.pool == p.id() {
                    return Err(kith_pools::PoolError::Policy(
                        "this is your own pool's offer: an admin of the other pool takes it up"
                            .into(),
                    ));
                }
                let a = kith_federation::Acceptance::sign(
                    signer,
                    &offer,
                    p.id(),
                    &v.charter.name,
                    lend,
                    now,
                    contact,
                );
                let ag = kith_federation::Agreement { offer: offer.clone(), acceptance: a };
                Ok(match v.federation.agreements.get(&ag.id()) {
                    Some(e) => e.agreement.clone(),
                    None => ag,
                })
            })?;
            // Handed to the offering pool's node first: a refusal there (taken up already)
            // leaves nothing recorded here; an unreachable node leaves the ticket to carry.
            let (mut recorded_by, mut not_delivered) = (None, None);
            for c in &offer.contact {
                let Ok(t) = c.parse::<kith_node::net::ticket::NodeTicket>() else { continue };
                let req = kith_pools::fed::FedRequest::Accept(Box::new(ag.clone()));
                match kith_pools::fed::deliver(running()?, &t, &req).await {
                    Ok(kith_pools::fed::FedReply::Recorded(name)) => {
                        recorded_by = Some(name);
                        break;
                    }
                    Ok(kith_pools::fed::FedReply::Refused(why)) => {
                        bail!("pool {} refused this acceptance: {why}", offer.pool_name)
                    }
                    Ok(kith_pools::fed::FedReply::NotHere(why)) => not_delivered = Some(why),
                    Ok(other) => not_delivered = Some(format!("an unexpected answer: {other:?}")),
                    Err(e) => not_delivered = Some(e),
                }
            }
            pools.with_pool(&pool, |p| {
                p.add_agreement(signer, &ag, now as i64)?;
                if recorded_by.is_some() {
                    p.confirm_agreement(signer, &ag.id(), now as i64)?;
                }
                Ok(())
            })?;
            answer(FedTicket {
                warning: no_relay_named(&lend, &ag.acceptance.contact),
                ticket: ag.to_ticket(),
                agreement: Some(hex(&ag.id())),
                expires_ms: None,
                not_delivered: recorded_by.is_none().then(|| {
                    not_delivered.unwrap_or_else(|| "the offer names no node to reach".into())
                }),
                recorded_by,
            })
        }
        PoolReq::FedAccept { pool, ticket } => {
            let ag = kith_federation::Agreement::from_ticket(&ticket).map_err(|e| anyhow!(e))?;
            ag.check().map_err(|e| anyhow!(e))?;
            let id = pools.with_pool(&pool, |p| {
                let v = p.view();
                admin_here(&v, signer)?;
                if ag.offer.pool != p.id() {
                    return Err(kith_pools::PoolError::Policy(format!(
                        "this acceptance is of an offer of pool {}, not of {}",
                        ag.offer.pool_name, v.charter.name
                    )));
                }
                if let Some(e) = v.federation.agreements.get(&ag.id())
                    && e.agreement != ag
                {
                    return Err(kith_pools::PoolError::Policy(format!(
                        "this offer was taken up already, by pool {}: an offer is taken up once (make a new one with `kith federation invite`)",
                        e.agreement.acceptance.pool_name
                    )));
                }
                p.add_agreement(signer, &ag, now as i64)?;
                Ok(p.id())
            })?;
            for c in &ag.acceptance.contact {
                if let Ok(t) = c.parse() {
                    let _ = running()?.add_peer(&t).await;
                }
            }
            let v = pools.view_of(&id).ok_or_else(|| anyhow!("the pool is gone"))?;
            answer(fed_agreement(&v, &id, &v.federation.agreements[&ag.id()], now as i64))
        }
        PoolReq::FedList => {
            let mut out = Vec::new();
            let held = rep.lent().totals();
            for (id, v) in pools.list() {
                for e in v.federation.agreements.values() {
                    let mut a = fed_agreement(&v, &id, e, now as i64);
                    (a.held_here_blobs, a.held_here_bytes) =
                        held.get(&e.agreement.id()).copied().unwrap_or_default();
                    out.push(a);
                }
            }
            answer(out)
        }
        PoolReq::FedLeave { pool, agreement } => {
            let (id, aid) = pools.with_pool(&pool, |p| {
                let v = p.view();
                admin_here(&v, signer)?;
                let hits: Vec<kith_crdt::Key> = v
                    .federation
                    .agreements
                    .iter()
                    .filter(|(k, e)| {
                        (agreement.len() >= 4 && hex(&k[..]).starts_with(&agreement))
                            || e.agreement.partner_of(&p.id()).is_some_and(|(_, n)| n == agreement)
                    })
                    .map(|(k, _)| *k)
                    .collect();
                let [aid] = hits[..] else {
                    return Err(kith_pools::PoolError::Policy(format!(
                        "{} agreements match `{agreement}` (`kith federation ls` lists them)",
                        hits.len()
                    )));
                };
                if v.federation.agreements[&aid].notice.is_some() {
                    return Err(kith_pools::PoolError::Policy(
                        "notice was given on this agreement already".into(),
                    ));
                }
                let n = kith_federation::Notice::sign(signer, aid, now);
                p.record_notice(signer, &n, now as i64)?;
                Ok((p.id(), aid))
            })?;
            // Carried to the partner's nodes (best effort: it ends there too when it hears).
            {
                let v = pools.view_of(&id).ok_or_else(|| anyhow!("the pool is gone"))?;
                let e = &v.federation.agreements[&aid];
                let g = &e.agreement;
                let contacts =
                    if g.offer.pool == id { &g.acceptance.contact } else { &g.offer.contact };
                if let (Some(n), Some(node)) = (&e.notice, node) {
                    for c in contacts {
                        let Ok(t) = c.parse::<kith_node::net::ticket::NodeTicket>() else {
                            continue;
                        };
                        let req = kith_pools::fed::FedRequest::Notice(n.clone());
                        if let Ok(kith_pools::fed::FedReply::Recorded(_)) =
                            kith_pools::fed::deliver(node, &t, &req).await
                        {
                            break;
                        }
                    }
                }
            }
            let v = pools.view_of(&id).ok_or_else(|| anyhow!("the pool is gone"))?;
            answer(fed_agreement(&v, &id, &v.federation.agreements[&aid], now as i64))
        }
        PoolReq::Identity => {
            let v = pools.identity().ok_or_else(|| anyhow!("no identity document"))?;
            answer(IdentityDoc {
                id: hex(&v.owner),
                name: v.name.clone(),
                devices: v
                    .devices
                    .iter()
                    .map(|(n, d)| IdentityDevice {
                        node: hex(n),
                        name: d.name.clone(),
                        added_ms: d.added_ms,
                        this: *n == pools.node(),
                    })
                    .collect(),
                recipients: v.recipients.keys().cloned().collect(),
                pools: v
                    .pools(pools.signer())
                    .iter()
                    .map(|(p, r)| IdentityPool {
                        id: hex(p),
                        name: r.name.clone(),
                        joined_ms: r.joined_ms,
                    })
                    .collect(),
            })
        }
        PoolReq::Ls => {
            answer(pools.list().iter().map(|(id, v)| summary(pools, id, v)).collect::<Vec<_>>())
        }
        PoolReq::Show { pool } => {
            let (id, v, heads) =
                pools.with_pool(&pool, |p| Ok((p.id(), p.view(), p.doc_mut().heads())))?;
            let mut out = show(pools, &id, &v);
            let mut heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
            heads.sort();
            out.heads = heads;
            if out.you != "active" {
                // A pool this node is out of: its last known state, nobody asked.
                return answer(out);
            }
            out.replication = Some(match rep.health(id).await {
                Ok(h) => {
                    // Used: every copy placement asks for; free: what offers leave.
                    let used: u64 = h.holders.iter().map(|x| x.assigned_bytes).sum();
                    out.capacity.used = Some(used);
                    out.capacity.free = Some(out.capacity.offered.saturating_sub(used));
                    replication(&v, &h)
                }
                Err(_) if node.is_none() => Replication {
                    error: Some(
                        "kith is not running here, so the holders were not asked (start it with `kith up`)".into(),
                    ),
                    ..Replication::default()
                },
                Err(e) => Replication { error: Some(e.to_string()), ..Replication::default() },
            });
            out.repair = rep.stats(&id).map(|st| Repair {
                at_ms: st.at_ms,
                responsible_blobs: st.responsible_blobs,
                responsible_bytes: st.responsible_bytes,
                lacking_blobs: st.lacking_blobs,
                repaired_blobs: st.repaired_blobs,
                repaired_bytes: st.repaired_bytes,
                error: st.error,
            });
            if v.charter.offsite_replicas > 0 {
                out.offsite = Some(match rep.offsite_health(id).await {
                    Ok(st) => crate::api::pools::Offsite {
                        partners: st
                            .partners
                            .iter()
                            .map(|(k, p)| {
                                let (passed, failed, failing) = rep.partner_audits(k);
                                crate::api::pools::OffsitePartner {
                                    name: p.name.clone(),
                                    pool: hex(k),
                                    holders: p.holders,
                                    placed_bytes: p.placed_bytes,
                                    held_bytes: p.held_bytes,
                                    silent_ms: p.silent_ms,
                                    replaced: p.replaced,
                                    audits_passed: passed,
                                    audits_failed: failed,
                                    audit_failing: failing,
                                    leaving_ends_ms: p.leaving_ends_ms,
                                    others_lend: p.others_lend,
                                }
                            })
                            .collect(),
                        // What the holders answered, else what this node's last pass met.
                        error: st.error.or_else(|| rep.offsite_stats(&id).and_then(|s| s.error)),
                    },
                    Err(e) => crate::api::pools::Offsite { error: Some(e), ..Default::default() },
                });
            }
            let edges = rep.edges().status();
            out.edges = v
                .federation
                .agreements
                .keys()
                .filter_map(|a| edges.get(a).map(|s| (a, s)))
                .map(|(a, s)| crate::api::pools::EdgeServed {
                    partner: s.pool_name.clone(),
                    sites: s.sites.clone(),
                    bytes: s.bytes,
                    egress: rep.edges().egress(a),
                    error: s.error.clone(),
                })
                .collect();
            answer(out)
        }
        PoolReq::LeavePlan { pool } => {
            let (id, v) = pools.with_pool(&pool, |p| Ok((p.id(), p.view())))?;
            let me = signer.author().key;
            let plan = leave::plan(id, &v, &me)?;
            leave::check_capacity(&v, &me)?;
            answer(plan_of(&plan))
        }
        PoolReq::Leave { pool, wait, force, yes } => {
            let limit = Duration::from_millis(parse_duration_ms(&wait)?);
            let (id, v) = pools.with_pool(&pool, |p| Ok((p.id(), p.view())))?;
            let me = signer.author().key;
            let plan = leave::plan(id, &v, &me)?;
            // --force leaves without a hand-off, so the others' capacity does not matter.
            if !force {
                leave::check_capacity(&v, &me)?;
            }
            if plan.needs_confirmation() && !yes {
                bail!(
                    "leaving pool {}: {}. Run again with --yes to leave",
                    plan.name,
                    plan.warnings().join("; ")
                );
            }
            let plan = if force { leave::LeavePlan { others_bytes: 0, ..plan } } else { plan };
            let progress_out = out.clone();
            let delivered = leave::leave(
                pools,
                rep,
                &plan,
                limit,
                || out.is_closed(),
                |p| {
                    progress_out.try_send(Frame::Progress {
                        done: p.done,
                        total: p.total,
                        files: 0,
                    })
                },
            )
            .await?;
            answer(Left {
                left: plan.name,
                handed_off: !force,
                sites: plan.sites,
                objects: plan.objects,
                delivered,
            })
        }
        PoolReq::Devices => {
            let peers = node.map(|n| n.peers()).unwrap_or_default();
            let seen = |n: &[u8; 32]| {
                pools.last_seen_ms(n).or_else(|| {
                    peers
                        .iter()
                        .find(|p| p.id.as_bytes() == n)
                        .and_then(|p| p.last_seen_ms.map(|t| t as i64))
                })
            };
            let list = kith_pools::devices::list(pools, seen);
            answer(
                list.iter()
                    .map(|d| Device {
                        node: hex(&d.node),
                        name: d.name.clone(),
                        added_ms: d.added_ms,
                        retired_ms: d.retired_ms,
                        this: d.this,
                        last_seen_ms: d.last_seen_ms,
                    })
                    .collect::<Vec<_>>(),
            )
        }
        PoolReq::Revoke { node: spec } => {
            let r = kith_pools::devices::retire(pools, &spec, now as i64)?;
            running()?.forget_peer(&r.node);
            answer(Retired { node: hex(&r.node), name: r.name, pools: r.pools })
        }
        PoolReq::Dissolve { pool } => {
            let (id, v) = pools.with_pool(&pool, |p| Ok((p.id(), p.view())))?;
            if v.active(&signer.author().key).is_none() {
                bail!("you are not a member of pool {}", v.charter.name);
            }
            rep.bring_home(id).await.and(rep.keep_sites(id).await.map(|_| 0)).map_err(|e| {
                anyhow!("your objects in pool {} are not all on this node and could not be fetched ({e}); nothing was changed", v.charter.name)
            })?;
            let others = pools.nodes_by_recency(&v);
            pools.with_pool(&pool, |p| p.dissolve(signer, pools.now_ms()))?;
            pools.with_identity(|d, s, now| d.drop_pool(s, &id, now).map(|_| ()))?;
            let delivered = leave::deliver(pools, id, &others).await;
            let members =
                v.members.values().filter(|m| m.state == kith_pools::State::Active).count();
            answer(Dissolved {
                dissolved: v.charter.name.clone(),
                members: members.saturating_sub(1) as u64,
                delivered,
            })
        }
        PoolReq::Remove { pool, member } => {
            let k = pools.with_pool(&pool, |p| p.remove(signer, &member, now as i64))?;
            answer(Removed { removed: hex(&k) })
        }
        PoolReq::Set { pool, key, value } => {
            pools.with_pool(&pool, |p| p.set(signer, &key, &value, now as i64))?;
            answer(Set { set: key, value })
        }
        PoolReq::OfferCompute { pool, cpu, memory, hours } => {
            let memory = parse_size(&memory).map_err(|e| anyhow!(e))?;
            if cpu > 256 {
                bail!("a node lends at most 256 cores, not {cpu}");
            }
            if cpu > 0 && memory < (16 << 20) {
                bail!("a job needs at least 16MiB of memory to run; lend more with --memory");
            }
            let offer = kith_pools::ComputeOffer { cpu, memory, hours };
            let node = pools.node();
            running()?;
            pools.with_pool(&pool, |p| p.offer_compute(signer, &node, &offer, now as i64))?;
            answer(crate::api::pools::ComputeOffered {
                cpu: offer.cpu,
                memory: offer.memory,
                hours: offer.hours,
            })
        }
        PoolReq::Offer { pool, storage, egress, zone } => {
            let offer = Offer {
                storage: parse_size(&storage).map_err(|e| anyhow!(e))?,
                egress: egress
                    .as_deref()
                    .map(parse_size)
                    .transpose()
                    .map_err(|e| anyhow!(e))?
                    .unwrap_or(0),
                zone: zone.unwrap_or_default(),
            };
            if offer.zone.len() > 64 {
                bail!("a zone label is at most 64 characters");
            }
            check_disk(running()?, pools.dir(), offer.storage)?;
            let node = pools.node();
            pools.with_pool(&pool, |p| p.offer(signer, &node, &offer, now as i64))?;
            answer(Offered { storage: offer.storage, egress: offer.egress, zone: offer.zone })
        }
    }
}

/// Records a pool in the identity document (and the display name, if given).
fn remember_pool(pools: &Pools, id: &[u8; 32], name: &str, display: Option<&str>) -> Result<()> {
    pools.with_identity(|d, s, now| {
        d.add_pool(s, id, name, now)?;
        if let Some(n) = display {
            d.set_name(s, n, now)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Refuses an offer larger than the disk can give: its free space plus what the store already
/// holds (the store lives on it).
fn check_disk(node: &kith_node::net::Node, home_dir: &std::path::Path, storage: u64) -> Result<()> {
    let free = kith_node::fsutil::free_bytes(home_dir)
        .map_err(|e| anyhow!("cannot read the free space of {}: {e}", home_dir.display()))?;
    let held = node.store().usage().map(|u| u.pack_bytes).unwrap_or(0);
    let can = free.saturating_add(held);
    if storage > can {
        bail!(
            "you offer {} but the disk of {} has {} free (and this node's store holds {}): offer at most that much (`--storage {}`), or free space first",
            crate::fmt::bytes(storage),
            home_dir.parent().unwrap_or(home_dir).display(),
            crate::fmt::bytes(free),
            crate::fmt::bytes(held),
            if can >= 1 << 30 { format!("{}GiB", can >> 30) } else { format!("{}MiB", can >> 20) }
        );
    }
    Ok(())
}

/// A leave plan, for the API.
fn plan_of(p: &leave::LeavePlan) -> LeavePlan {
    LeavePlan {
        pool: hex(&p.pool),
        name: p.name.clone(),
        sites: p.sites.clone(),
        objects: p.objects,
        object_bytes: p.object_bytes,
        others_bytes: p.others_bytes,
        needs_confirmation: p.needs_confirmation(),
        warnings: p.warnings(),
    }
}

/// A typed answer, as the JSON that crosses the control socket.
fn answer<T: serde::Serialize>(t: T) -> Result<Value> {
    Ok(serde_json::to_value(t)?)
}

/// A put into a pool, with the names of the pool and of each holder's member.
pub fn pool_put_of(pools: &Pools, p: &PoolPut, seconds: f64) -> crate::api::store::PoolPut {
    let v = pools.view_of(&p.pool);
    let member_of = |node: &[u8; 32]| {
        v.as_ref()
            .and_then(|v| v.node_owner(node))
            .and_then(|k| v.as_ref()?.members.get(&k).map(|m| m.name.clone()))
    };
    crate::api::store::PoolPut {
        pool: hex(&p.pool),
        pool_name: v.as_ref().map(|v| v.charter.name.clone()),
        manifest: hex(&p.manifest),
        blobs: p.blobs,
        bytes: p.bytes,
        replicas: p.replicas,
        holders: p.holders as u64,
        acks: p
            .acks
            .iter()
            .map(|a| crate::api::store::Ack {
                node: hex(&a.node),
                member: member_of(&a.node),
                blobs: a.blobs,
                bytes: a.bytes,
                ok: a.result.is_ok(),
                fetched: a.result.as_ref().ok().copied(),
                error: a.result.as_ref().err().cloned(),
            })
            .collect(),
        seconds,
        short_blobs: p.short_blobs,
        complete: p.short_blobs == 0 && p.acks.iter().all(|a| a.result.is_ok()),
    }
}

fn replication(v: &PoolView, h: &kith_pools::replica::Health) -> Replication {
    let member =
        |n: &[u8; 32]| v.members.values().find(|m| m.nodes.contains_key(n)).map(|m| m.name.clone());
    Replication {
        error: None,
        objects: h.objects,
        bytes: h.bytes,
        blobs: h.blobs,
        under_replicated_bytes: h.under_replicated_bytes,
        under_replicated_blobs: h.under_replicated_blobs,
        lost_blobs: h.lost_blobs,
        unconfirmed_blobs: h.unconfirmed_blobs,
        silent: h.silent.iter().map(|n| hex(n)).collect(),
        unreadable: h.unreadable.clone(),
        lost_objects: h.lost_objects.clone(),
        over_quota: h.over_quota.clone(),
        holders: h
            .holders
            .iter()
            .map(|x| Holder {
                node: hex(&x.node),
                member: member(&x.node),
                state: x.state.to_string(),
                silent_s: x.silent_s,
                assigned_blobs: x.assigned_blobs,
                assigned_bytes: x.assigned_bytes,
                confirmed_blobs: x.confirmed_blobs,
                error: x.error.clone(),
            })
            .collect(),
    }
}

fn summary(pools: &Pools, id: &[u8; 32], v: &PoolView) -> PoolSummary {
    let me = pools.signer().author().key;
    let active = v.members.values().filter(|m| m.state == kith_pools::State::Active).count();
    PoolSummary {
        id: hex(id),
        name: v.charter.name.clone(),
        members: active as u64,
        replicas: v.charter.replicas,
        offered: v.holders().iter().map(|h| h.weight).sum::<u64>(),
        role: v.members.get(&me).map(|m| format!("{} ({})", m.role.as_str(), m.state.as_str())),
    }
}

fn show(pools: &Pools, id: &[u8; 32], v: &PoolView) -> PoolDetail {
    let holders = v.holders();
    let zones = kith_pools::placement::zones(&holders) as u64;
    let active = |m: &&kith_pools::Member| m.state == kith_pools::State::Active;
    let me = pools.signer().author().key;
    let you = match v.members.get(&me).map(|m| m.state) {
        _ if v.charter.dissolved_ms.is_some() => "dissolved",
        Some(kith_pools::State::Active) => "active",
        Some(kith_pools::State::Left) => "left",
        Some(kith_pools::State::Removed) => "removed",
        None => "not a member",
    };
    let c = &v.charter;
    PoolDetail {
        id: hex(id),
        charter: Charter {
            name: c.name.clone(),
            replicas: c.replicas,
            quota: c.quota,
            cost_rule: c.cost_rule.clone(),
            join_rule: c.join_rule.clone(),
            repair_after_ms: c.repair_after_ms,
            audit_every_ms: c.audit_every_ms,
            record_every_ms: c.record_every_ms,
            dissolved_ms: c.dissolved_ms,
            cpu_price: crate::api::ledger::price(c.cpu_price_micro),
            offsite_replicas: c.offsite_replicas,
        },
        audits: v
            .members
            .iter()
            .filter(|(_, m)| active(m))
            .flat_map(|(k, m)| {
                m.audits.iter().map(move |(n, a)| Audit {
                    auditor: hex(k),
                    auditor_name: m.name.clone(),
                    node: hex(n),
                    passed: a.passed,
                    failed: a.failed,
                    failing: a.failing,
                    reason: a.reason.clone(),
                    at_ms: a.at_ms,
                })
            })
            .collect(),
        runners: {
            let checked: std::collections::BTreeSet<kith_crdt::Key> =
                v.members.values().flat_map(|m| m.checks.keys().copied()).collect();
            checked
                .into_iter()
                .filter_map(|n| {
                    let owner = v.node_owner(&n)?;
                    let r = v.reputation(&n);
                    let reason = v
                        .members
                        .iter()
                        .filter(|(k, _)| **k != owner)
                        .filter_map(|(_, m)| m.checks.get(&n))
                        .filter(|c| c.disagreed > 0)
                        .max_by_key(|c| c.at_ms)
                        .map(|c| c.reason.clone())
                        .unwrap_or_default();
                    (r.agreed + r.disagreed > 0).then(|| crate::api::pools::RunnerStanding {
                        node: hex(&n),
                        member_name: v.members[&owner].name.clone(),
                        agreed: r.agreed,
                        disagreed: r.disagreed,
                        reason,
                        doubtful: r.doubtful(),
                    })
                })
                .collect()
        },
        objects: v
            .members
            .iter()
            .filter(|(_, m)| active(m))
            .flat_map(|(k, m)| {
                m.objects.iter().map(move |(o, po)| PoolObject {
                    id: hex(o),
                    owner: hex(k),
                    owner_name: m.name.clone(),
                    owner_state: m.state.as_str().to_string(),
                    // Names are sealed for their owner: others see that an object is there.
                    name: if *k == me {
                        po.name.open(pools.signer(), id, o).unwrap_or_else(|| "(unreadable)".into())
                    } else {
                        "(private)".into()
                    },
                    bytes: po.bytes,
                    blobs: po.blobs,
                    at_ms: po.at_ms,
                })
            })
            .collect(),
        members: v
            .members
            .iter()
            .map(|(k, m)| Member {
                id: hex(k),
                name: m.name.clone(),
                role: m.role.as_str().to_string(),
                state: m.state.as_str().to_string(),
                joined_ms: m.joined_ms,
                nodes: m
                    .nodes
                    .iter()
                    .map(|(n, o)| {
                        let c = m.compute.get(n).cloned().unwrap_or_default();
                        MemberNode {
                            id: hex(n),
                            storage: o.storage,
                            egress: o.egress,
                            zone: o.zone.clone(),
                            cpu: c.cpu,
                            memory: c.memory,
                            hours: c.hours,
                        }
                    })
                    .collect(),
            })
            .collect(),
        capacity: Capacity {
            offered: holders.iter().map(|h| h.weight).sum::<u64>(),
            zones,
            used: None,
            free: None,
        },
        policy_met: zones >= c.replicas,
        rejected_changes: pools
            .rejections()
            .into_iter()
            .filter(|r| &r.pool == id)
            .map(|r| Rejection { peer: r.peer, reason: r.reason, at_ms: r.at_ms })
            .collect(),
        sync_bytes: SyncBytes { sent: pools.sync_bytes().0, received: pools.sync_bytes().1 },
        you: you.to_string(),
        heads: Vec::new(),
        replication: None,
        repair: None,
        offsite: None,
        edges: Vec::new(),
    }
}

/// What a pool lends, from the command line's sizes.
/// What an offer or acceptance names to reach this pool's nodes: this node's ticket, and when
/// the pool lends relay, the relays this node serves or was given (`own`, those a partner's
/// nodes may be sent to, at most two; this pool's nodes use them while the agreement stands,
/// and the partner's when this pool made the offer: docs/federation.md "Relays").
fn contacts(
    node: &kith_node::net::Node,
    lend: &kith_federation::Lend,
    own: &[String],
) -> Vec<String> {
    let mut c = vec![node.ticket().to_string()];
    if lend.relay {
        let ok = own.iter().filter(|u| kith_federation::relay_url_ok(u));
        c.extend(ok.take(kith_federation::MAX_RELAYS).cloned());
    }
    c
}

/// When `lend` lends relay but `contact` names no relay's URL: what to do about it (the
/// partner's nodes cannot find a relay nobody named).
fn no_relay_named(lend: &kith_federation::Lend, contact: &[String]) -> Option<String> {
    let named = contact.iter().any(|c| kith_federation::relay_url_ok(c));
    (lend.relay && !named).then(|| {
        "this lends relay but names no relay's URL (this node serves none a partner may be sent to, and was given none with `--relay`): the other pool's nodes will not find it. Run this on the node that serves the relay (`kith up --serve-relay ADDR:PORT`, at an address both neighbourhoods reach), or on a node started with `--relay URL`".to_string()
    })
}

/// What a pool lends, from the command's arguments.
fn fed_lend(l: &crate::api::pools::FedLend) -> Result<kith_federation::Lend> {
    let size = |s: &str| -> Result<u64> {
        if s.trim().is_empty() { Ok(0) } else { parse_size(s).map_err(|e| anyhow!(e)) }
    };
    Ok(kith_federation::Lend {
        storage: size(&l.storage)?,
        egress: size(&l.egress)?,
        cdn: l.cdn,
        relay: l.relay,
    })
}

/// A price (`0.02`) in millionths; empty: none.
fn price(s: &str) -> Result<u64> {
    if s.trim().is_empty() {
        return Ok(0);
    }
    kith_pools::parse_price_micro(s).ok_or_else(|| {
        anyhow!("a price is a number such as 0.02 (six decimals at most), not `{s}`")
    })
}

/// Refuses anyone but an active admin of the pool.
fn admin_here(v: &PoolView, signer: &kith_crdt::Signer) -> Result<(), kith_pools::PoolError> {
    if v.active(&signer.author().key).is_some_and(|m| m.role == kith_pools::Role::Admin) {
        Ok(())
    } else {
        Err(kith_pools::PoolError::Denied(format!(
            "only an admin of pool {} federates it",
            v.charter.name
        )))
    }
}

/// An agreement as `kith federation ls` shows it, from pool `id`'s side.
fn fed_agreement(
    v: &PoolView,
    id: &kith_crdt::Key,
    e: &kith_pools::FedEntry,
    now_ms: i64,
) -> crate::api::pools::FedAgreement {
    let g = &e.agreement;
    let (partner, partner_name) = g.partner_of(id).unwrap_or((g.offer.pool, &g.offer.pool_name));
    let (lends, lent) = g.lending_of(id).unwrap_or_default();
    crate::api::pools::FedAgreement {
        id: hex(&g.id()),
        pool: v.charter.name.clone(),
        pool_id: hex(id),
        partner: hex(&partner),
        partner_name: partner_name.to_string(),
        side: if g.offer.pool == *id { "offered" } else { "accepted" }.into(),
        state: e.state(id, now_ms).into(),
        lends_storage: lends.storage,
        lends_egress: lends.egress,
        lends_cdn: lends.cdn,
        lends_relay: lends.relay,
        lent_storage: lent.storage,
        lent_egress: lent.egress,
        lent_cdn: lent.cdn,
        lent_relay: lent.relay,
        price_storage: crate::api::ledger::price(g.offer.price.storage_per_gib_month),
        price_egress: crate::api::ledger::price(g.offer.price.egress_per_gb),
        since_ms: g.acceptance.at_ms,
        term_days: g.offer.term_days,
        notice_days: g.offer.notice_days,
        ends_ms: e.ends_ms(),
        relays: if e.state(id, now_ms) == "ended" {
            Vec::new()
        } else {
            g.relays_for(id).into_iter().map(str::to_string).collect()
        },
        held_here_blobs: 0,
        held_here_bytes: 0,
    }
}
