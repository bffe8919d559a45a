//! Pool commands, run in the daemon: they need the node to reach the other members.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use kith_crdt::hex;
use kith_node::Home;
use kith_pools::service::{Pools, encode_ticket};
use kith_pools::{Offer, Pool, PoolView, parse_size};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest invite lifetime accepted.
const MAX_INVITE_LIFETIME_MS: u64 = 365 * 24 * 3_600_000;

/// A pool command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "pool_op", rename_all = "snake_case")]
pub enum PoolReq {
    /// Found a pool.
    Create { name: String, replicas: Option<u64>, quota: Option<String>, display: Option<String> },
    /// Issue an invite ticket.
    Invite { pool: String, expires: String, uses: u32 },
    /// Join with a ticket.
    Join { ticket: String, display: Option<String> },
    /// List pools.
    Ls,
    /// One pool in detail.
    Show { pool: String },
    /// Leave.
    Leave { pool: String },
    /// Remove a member.
    Remove { pool: String, member: String },
    /// Set a charter field or role.
    Set { pool: String, key: String, value: String },
    /// Offer this node's resources.
    Offer { pool: String, storage: String, egress: Option<String>, zone: Option<String> },
}

/// Makes the pools service for a home.
pub fn open(home: &Home) -> Result<Arc<Pools>> {
    let identity = home.identity()?;
    let node = home.node_key()?;
    let signer = kith_crdt::Signer::new(&identity.signing_key().to_bytes(), *node.id().as_bytes());
    Ok(Arc::new(Pools::load(home.root(), signer, *node.id().as_bytes())?))
}

/// Parses `24h`, `30m`, `7d`, `90s` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| anyhow!("`{s}` is not a duration (try 24h, 30m, 7d)"))?;
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" | "" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("unknown duration unit `{unit}` in `{s}` (s, m, h, d)"),
    };
    Ok(n.saturating_mul(mult))
}

fn display(pools: &Pools, given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("member-{}", &hex(&pools.signer().author().key)[..8]))
}

/// Runs a pool command.
pub async fn handle(
    pools: &Arc<Pools>,
    node: &kith_node::net::Node,
    req: PoolReq,
) -> Result<Value> {
    let now = kith_node::keys::now_ms();
    let signer = pools.signer();
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
            let id = pools.create(&display(pools, d), charter)?;
            Ok(json!({ "id": hex(&id), "name": name }))
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
            Ok(
                json!({ "ticket": encode_ticket(&inv, &node.ticket()), "expires_ms": now + life, "uses": uses }),
            )
        }
        PoolReq::Join { ticket, display: d } => {
            // Remember the inviting node, so this node can reach it again to sync.
            let (_, inviter) =
                kith_pools::service::decode_ticket(&ticket).map_err(|e| anyhow!(e))?;
            node.add_peer(&inviter)
                .await
                .map_err(|e| anyhow!("cannot reach the inviting node: {e}"))?;
            let id = pools.join(&ticket, &display(pools, d)).await?;
            let name = pools.with_pool(&hex(&id), |p| Ok(p.view().charter.name))?;
            Ok(json!({ "id": hex(&id), "name": name }))
        }
        PoolReq::Ls => {
            Ok(Value::Array(pools.list().iter().map(|(id, v)| summary(pools, id, v)).collect()))
        }
        PoolReq::Show { pool } => {
            let (id, v) = pools.with_pool(&pool, |p| Ok((p.id(), p.view())))?;
            Ok(show(pools, &id, &v))
        }
        PoolReq::Leave { pool } => {
            pools.with_pool(&pool, |p| p.leave(signer, now as i64))?;
            Ok(json!({ "left": pool }))
        }
        PoolReq::Remove { pool, member } => {
            let k = pools.with_pool(&pool, |p| p.remove(signer, &member, now as i64))?;
            Ok(json!({ "removed": hex(&k) }))
        }
        PoolReq::Set { pool, key, value } => {
            pools.with_pool(&pool, |p| p.set(signer, &key, &value, now as i64))?;
            Ok(json!({ "set": key, "value": value }))
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
            let node = pools.node();
            pools.with_pool(&pool, |p| p.offer(signer, &node, &offer, now as i64))?;
            Ok(json!({ "storage": offer.storage, "egress": offer.egress, "zone": offer.zone }))
        }
    }
}

fn summary(pools: &Pools, id: &[u8; 32], v: &PoolView) -> Value {
    let me = pools.signer().author().key;
    let active = v.members.values().filter(|m| m.state == kith_pools::State::Active).count();
    json!({
        "id": hex(id),
        "name": v.charter.name,
        "members": active,
        "replicas": v.charter.replicas,
        "offered": v.holders().iter().map(|h| h.weight).sum::<u64>(),
        "role": v.members.get(&me).map(|m| format!("{} ({})", m.role.as_str(), m.state.as_str())),
    })
}

fn show(pools: &Pools, id: &[u8; 32], v: &PoolView) -> Value {
    let holders = v.holders();
    let zones = kith_pools::placement::zones(&holders) as u64;
    let members: Vec<Value> = v
        .members
        .iter()
        .map(|(k, m)| {
            json!({
                "id": hex(k),
                "name": m.name,
                "role": m.role.as_str(),
                "state": m.state.as_str(),
                "joined_ms": m.joined_ms,
                "nodes": m.nodes.iter().map(|(n, o)| json!({
                    "id": hex(n), "storage": o.storage, "egress": o.egress, "zone": o.zone,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let rejections: Vec<Value> = pools
        .rejections()
        .into_iter()
        .filter(|r| &r.pool == id)
        .map(|r| json!({ "peer": r.peer, "reason": r.reason, "at_ms": r.at_ms }))
        .collect();
    json!({
        "id": hex(id),
        "charter": {
            "name": v.charter.name, "replicas": v.charter.replicas, "quota": v.charter.quota,
            "cost_rule": v.charter.cost_rule, "join_rule": v.charter.join_rule,
        },
        "members": members,
        "capacity": { "offered": holders.iter().map(|h| h.weight).sum::<u64>(), "zones": zones },
        "policy_met": zones >= v.charter.replicas,
        "rejected_changes": rejections,
    })
}
