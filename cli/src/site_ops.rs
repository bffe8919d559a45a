//! `kith site`: publish folders as sites of a pool, list, roll back, take down; run in the
//! daemon (which holds the pools and serves the sites).

use anyhow::{Result, anyhow, bail};
use kith_crdt::hex;
use kith_hosting::site::{publish, site_secret};
use kith_pools::docs::Pools;
use kith_pools::{Access, SiteVersion};
use serde_json::Value;

use crate::ops::Ctx;

pub use crate::api::SiteReq;
use crate::api::sites::*;

/// The pool named, or the only pool this node is in.
fn pool_spec(pools: &Pools, given: Option<String>) -> Result<String> {
    if let Some(p) = given {
        pools.resolve(&p)?;
        return Ok(p);
    }
    match pools.list().as_slice() {
        [(id, _)] => Ok(hex(id)),
        [] => {
            bail!("this node is in no pool; sites are published to a pool (see `kith pool create`)")
        }
        _ => bail!("this node is in several pools; say which with --pool"),
    }
}

/// The pool holding this identity's site `name`.
fn own_site(pools: &Pools, name: &str) -> Result<String> {
    let me = pools.signer().author().key;
    pools
        .list()
        .into_iter()
        .find(|(_, v)| v.members.get(&me).is_some_and(|m| m.sites.contains_key(name)))
        .map(|(id, _)| hex(&id))
        .ok_or_else(|| {
            // Somebody else's? Say whose, and what they can do.
            let owner = pools.list().into_iter().find_map(|(_, v)| {
                let (k, _) = v.site(name)?;
                Some((v.members.get(&k)?.name.clone(), v.charter.name.clone()))
            });
            match owner {
                Some((who, pool)) => anyhow!(
                    "site `{name}` in pool {pool} is {who}'s, not yours: only its owner publishes, rolls back or removes it"
                ),
                None => anyhow!("you have no site `{name}` (see `kith site ls`)"),
            }
        })
}

/// `http://ADDR:PORT{path}` for each address this node's LAN listener is reachable at (its
/// LAN addresses first; loopback when it has no other).
pub fn lan_urls(ctx: &Ctx, path: &str) -> Vec<String> {
    let Some(http) = ctx.http else { return Vec::new() };
    let port = if http.port() == 80 { String::new() } else { format!(":{}", http.port()) };
    let mut ips: Vec<std::net::IpAddr> = if http.ip().is_unspecified() {
        ctx.node.as_ref().map(|n| n.addrs().iter().map(|a| a.ip()).collect()).unwrap_or_default()
    } else {
        vec![http.ip()]
    };
    ips.retain(|ip| !ip.is_unspecified());
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    ips.dedup();
    if ips.iter().any(|ip| !ip.is_loopback()) {
        ips.retain(|ip| !ip.is_loopback());
    }
    ips.iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(v4) => format!("http://{v4}{port}{path}"),
            std::net::IpAddr::V6(v6) => format!("http://[{v6}]{port}{path}"),
        })
        .collect()
}

fn urls(ctx: &Ctx, name: &str) -> Vec<String> {
    let port = ctx.http.map(|a| a.port()).unwrap_or(7780);
    let suffix = if port == 80 { String::new() } else { format!(":{port}") };
    let mut all = vec![format!("http://{name}.local{suffix}/")];
    all.extend(lan_urls(ctx, &format!("/s/{name}/")));
    all
}

/// A typed answer, as the JSON that crosses the control socket.
fn answer<T: serde::Serialize>(t: T) -> Result<Value> {
    Ok(serde_json::to_value(t)?)
}

/// Runs a site command.
pub async fn handle(ctx: &Ctx, req: SiteReq) -> Result<Value> {
    let pools = ctx.pools.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
    let signer = pools.signer();
    match req {
        SiteReq::Publish { dir, name, pool, members } => {
            kith_hosting::check_name(&name).map_err(|e| anyhow!(e))?;
            let spec = pool_spec(pools, pool)?;
            let id = pools.resolve(&spec)?;
            let me = signer.author().key;
            if let Some((owner, _)) =
                pools.view_of(&id).and_then(|v| v.site(&name).map(|(o, s)| (o, s.clone())))
                && owner != me
            {
                bail!("`{name}` is another member's site in this pool; choose another name");
            }
            let rep = ctx.replicator.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
            let secret = site_secret(ctx.home.identity()?.store_secret(), &id, &name);
            let (store, n, d) = (ctx.store.clone(), name.clone(), dir.clone());
            let started = std::time::Instant::now();
            let now = pools.now_ms();
            let p = tokio::task::spawn_blocking(move || publish(&store, &secret, &n, &d, now))
                .await?
                .map_err(|e| anyhow!(e))?;
            let put = rep
                .put_blobs(&spec, p.index.0, &format!("site {name}"), &p.blobs)
                .await
                .map_err(|e| anyhow!(e))?;
            let access = if members { Access::Members } else { Access::Public };
            let v = SiteVersion {
                index: p.index.0,
                key: p.key,
                len: p.len,
                files: p.files,
                bytes: p.bytes,
                at_ms: pools.now_ms(),
            };
            let version = pools.with_pool(&spec, |pool| {
                pool.publish_site(signer, &name, access, &v, pools.now_ms())
            })?;
            answer(Published {
                urls: urls(ctx, &name),
                name,
                pool: hex(&id),
                version,
                access: access.as_str().to_string(),
                files: p.files,
                bytes: p.bytes,
                new_blobs: p.new_blobs,
                blobs: p.blobs.len() as u64,
                skipped: p.skipped.clone(),
                seconds: started.elapsed().as_secs_f64(),
                pool_put: crate::pool_ops::pool_put_of(
                    pools,
                    &put,
                    started.elapsed().as_secs_f64(),
                ),
            })
        }
        SiteReq::Ls => {
            let mut sites = Vec::new();
            for (id, v) in pools.list() {
                // Every active member's node serves every site; those heard from lately (and
                // this one) are serving now.
                let limit = v.charter.repair_after_ms as i64;
                let me = pools.node();
                let serving = v
                    .all_nodes()
                    .iter()
                    .filter(|n| v.node_owner(n).is_some())
                    .filter(|n| **n == me || pools.silent_for_ms(n) <= limit)
                    .count() as u64;
                for (owner, name, s) in v.sites() {
                    let cur = s.served();
                    let winner = v.site(name).is_some_and(|(o, _)| o == *owner);
                    let counts =
                        ctx.gateway.as_ref().map(|g| g.stats().site(name)).unwrap_or_default();
                    sites.push(SiteEntry {
                        name: name.clone(),
                        pool: hex(&id),
                        pool_name: v.charter.name.clone(),
                        owner: hex(owner),
                        owner_name: v.members[owner].name.clone(),
                        access: s.access.as_str().to_string(),
                        version: s.current,
                        files: cur.map(|c| c.files),
                        bytes: cur.map(|c| c.bytes),
                        at_ms: cur.map(|c| c.at_ms),
                        served: winner,
                        urls: urls(ctx, name),
                        requests: counts.requests,
                        cache_hits: counts.cache_hits,
                        nodes: serving,
                    });
                }
            }
            let edge = ctx
                .replicator
                .as_ref()
                .map(|r| r.edges().served_sites())
                .unwrap_or_default()
                .into_iter()
                .map(|e| EdgeSiteEntry {
                    urls: urls(ctx, &e.head.name),
                    name: e.head.name,
                    partner: e.pool_name,
                    version: e.head.number,
                    files: e.head.files,
                    bytes: e.head.bytes,
                })
                .collect();
            answer(SiteList { sites, edge })
        }
        SiteReq::Versions { name } => {
            let (id, v) =
                pools.list().into_iter().find(|(_, v)| v.site(&name).is_some()).ok_or_else(
                    || anyhow!("no site `{name}` in this node's pools (see `kith site ls`)"),
                )?;
            let (owner, s) = v.site(&name).expect("found above");
            let versions: Vec<Version> = s
                .versions
                .iter()
                .map(|(n, x)| Version {
                    version: *n,
                    current: *n == s.current,
                    files: x.files,
                    bytes: x.bytes,
                    at_ms: x.at_ms,
                    index: hex(&x.index),
                })
                .collect();
            answer(Versions { name, pool: hex(&id), owner: hex(&owner), versions })
        }
        SiteReq::Rollback { name, version } => {
            let spec = own_site(pools, &name)?;
            pools.with_pool(&spec, |p| p.rollback_site(signer, &name, version, pools.now_ms()))?;
            answer(RolledBack { name, version })
        }
        SiteReq::Set { name, key, value } => {
            if key != "keep" {
                bail!("a site has one setting, `keep N` (how many versions it keeps), not `{key}`");
            }
            let keep: u64 = value
                .parse()
                .ok()
                .filter(|k| *k >= 1)
                .ok_or_else(|| anyhow!("keep must be a number of versions, at least 1"))?;
            let spec = own_site(pools, &name)?;
            let forgotten =
                pools.with_pool(&spec, |p| p.set_site_keep(signer, &name, keep, pools.now_ms()))?;
            answer(SiteSet { name, keep, forgotten })
        }
        SiteReq::Rm { name } => {
            let spec = own_site(pools, &name)?;
            let site = pools.with_pool(&spec, |p| p.remove_site(signer, &name, pools.now_ms()))?;
            answer(SiteRemoved { name, versions: site.versions.len() as u64 })
        }
        SiteReq::Credential { pool, expires } => {
            let spec = pool_spec(pools, pool)?;
            let id = pools.resolve(&spec)?;
            let life = crate::pool_ops::parse_duration_ms(&expires)?;
            if life == 0 || life > 365 * 86_400_000 {
                bail!("--expires must be between 1s and 365d");
            }
            let until = pools.now_ms() as u64 + life;
            answer(Credential {
                credential: kith_hosting::access::issue(signer, &id, until),
                pool: hex(&id),
                expires_ms: until,
            })
        }
    }
}

/// Checks a folder exists before the daemon is asked (a clear error without a round trip).
pub fn check_dir(dir: &std::path::Path) -> Result<()> {
    let m = std::fs::metadata(dir).map_err(|e| anyhow!("cannot read {}: {e}", dir.display()))?;
    if !m.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    Ok(())
}
