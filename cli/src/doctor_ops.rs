//! `kith doctor`: checks a node's setup (keys, the daemon, its config, ports, the LAN, disk
//! space against offers, clocks and versions of peers) and says what to fix. It runs in the
//! daemon when one runs (peers' clocks and versions are known there), else on the home alone.

use std::os::unix::fs::PermissionsExt;

use anyhow::Result;
use serde_json::Value;

use crate::api::node::{Check, Doctor};
use crate::ops::Ctx;

/// A clock this far from a peer's is worth a warning (NTP keeps machines within milliseconds).
const CLOCK_WARN_MS: i64 = 10_000;
/// This far, and what the node signs carries times others misjudge (invites expire, months
/// of the ledger close).
const CLOCK_FAIL_MS: i64 = 5 * 60_000;
/// Less free space than this is worth a warning whatever was offered.
const LOW_DISK: u64 = 1 << 30;

fn check(what: &str, level: &str, says: String, fix: Option<String>) -> Check {
    Check { what: what.into(), level: level.into(), says, fix }
}

pub(crate) async fn doctor(ctx: &Ctx) -> Result<Value> {
    let mut checks = vec![keys(ctx)];
    let root = ctx.home.root();
    let config = crate::config::FileConfig::load(None, root)
        .and_then(|(f, path)| Ok((f.merge(crate::config::Flags::default())?, path)));
    match &ctx.node {
        Some(node) => checks.push(check(
            "daemon",
            "ok",
            format!(
                "kith up runs (for {} s), on {}",
                ctx.started.elapsed().as_secs(),
                node.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            ),
            None,
        )),
        None => checks.push(check(
            "daemon",
            "warn",
            "kith up is not running: this node neither serves nor syncs".into(),
            Some("start it: `kith up`, or `kith service install` to keep it running".into()),
        )),
    }
    let config = match config {
        Ok((c, path)) => {
            let from = path.map_or("built-in defaults (no kith.toml)".to_string(), |p| {
                format!("{}", p.display())
            });
            checks.push(check("config", "ok", format!("settings from {from}"), None));
            Some(c)
        }
        Err(e) => {
            checks.push(check(
                "config",
                "fail",
                format!("{e:#}"),
                Some("fix the file (`kith up --print-config` shows every key)".into()),
            ));
            None
        }
    };
    if ctx.node.is_none()
        && let Some(c) = &config
    {
        checks.push(ports(c));
    }
    checks.push(lan(ctx, config.as_ref()));
    checks.push(disk(ctx));
    if let Some(node) = &ctx.node {
        let peers = node.peers();
        checks.push(clocks(&peers));
        checks.push(versions(&peers));
    }
    Ok(serde_json::to_value(Doctor { checks })?)
}

/// Key files and the control token: readable by their owner only.
fn keys(ctx: &Ctx) -> Check {
    let root = ctx.home.root();
    let mut open = Vec::new();
    let mut seen = Vec::new();
    for f in [kith_node::home::NODE_KEY_FILE, kith_node::home::IDENTITY_FILE, crate::client::TOKEN]
    {
        let Ok(meta) = std::fs::metadata(root.join(f)) else { continue };
        seen.push(f);
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            open.push(format!("{f} (mode {mode:o})"));
        }
    }
    if open.is_empty() {
        check("keys", "ok", format!("{} readable by their owner only", seen.join(", ")), None)
    } else {
        let files: Vec<String> = open
            .iter()
            .map(|f| root.join(f.split(' ').next().unwrap_or("")).display().to_string())
            .collect();
        check(
            "keys",
            "fail",
            format!("readable by others: {}", open.join(", ")),
            Some(format!("chmod 600 {}", files.join(" "))),
        )
    }
}

/// Whether the ports `kith up` would listen on are free (the daemon is not running).
fn ports(c: &crate::daemon::Config) -> Check {
    let mut busy = Vec::new();
    for a in &c.listen {
        if let Err(e) = std::net::UdpSocket::bind(a) {
            busy.push(format!("UDP {a} ({e})"));
        }
    }
    if let Err(e) = std::net::TcpListener::bind(c.http) {
        busy.push(format!("TCP {} ({e})", c.http));
    }
    if let Some(m) = c.metrics
        && let Err(e) = std::net::TcpListener::bind(m)
    {
        busy.push(format!("TCP {m} for metrics ({e})"));
    }
    if busy.is_empty() {
        let udp: Vec<String> = c.listen.iter().map(|a| a.to_string()).collect();
        check("ports", "ok", format!("UDP {} and TCP {} are free", udp.join(", "), c.http), None)
    } else {
        check(
            "ports",
            "fail",
            format!("kith up could not listen on {}", busy.join("; ")),
            Some("stop what holds them, or choose others: --listen/--http, or `listen`/`http` in kith.toml".into()),
        )
    }
}

/// An interface mDNS can use, and what it found.
fn lan(ctx: &Ctx, c: Option<&crate::daemon::Config>) -> Check {
    // The running daemon's own setting, else what `kith up` would use.
    let off = match &ctx.node {
        Some(n) => n.mdns().is_none(),
        None => c.is_some_and(|c| c.mdns.disabled),
    };
    if off {
        return check(
            "lan",
            "warn",
            "mDNS is off: nodes on this LAN neither find this one nor are found".into(),
            Some("add peers by ticket (`kith peer add`), or turn mDNS on".into()),
        );
    }
    let wanted = c.map(|c| c.mdns.interfaces.clone()).unwrap_or_default();
    let ifaces: Vec<if_addrs::Interface> = match if_addrs::get_if_addrs() {
        Ok(v) => v,
        Err(e) => return check("lan", "warn", format!("cannot list interfaces: {e}"), None),
    };
    let mut by_name: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for i in ifaces.iter().filter(|i| !i.is_loopback() && i.is_oper_up()) {
        if wanted.is_empty() || wanted.contains(&i.name) {
            by_name.entry(&i.name).or_default().push(i.ip().to_string());
        }
    }
    let usable: Vec<String> =
        by_name.iter().map(|(n, ips)| format!("{n} ({})", ips.join(", "))).collect();
    if usable.is_empty() {
        return check(
            "lan",
            "warn",
            "no interface is up with an address mDNS can use: nodes on the LAN will not find this one"
                .into(),
            Some("connect to the LAN, or add peers by ticket (`kith peer add`)".into()),
        );
    }
    let found = ctx.node.as_ref().map(|n| n.peers().iter().filter(|p| p.mdns).count());
    let says = match found {
        Some(n) => format!("mDNS on {}; {n} nodes found on the LAN", usable.join(", ")),
        None => format!("mDNS can use {}", usable.join(", ")),
    };
    check("lan", "ok", says, None)
}

/// Free space on the home's disk against what this node offered its pools and holds.
fn disk(ctx: &Ctx) -> Check {
    let root = ctx.home.root();
    let free = match kith_node::fsutil::free_bytes(root) {
        Ok(f) => f,
        Err(e) => return check("disk", "warn", format!("cannot read free space: {e}"), None),
    };
    let (mut offered, mut held) = (0u64, 0u64);
    let mut short = Vec::new();
    if let Some(pools) = &ctx.pools {
        let me = pools.node();
        for (id, v) in pools.views().iter() {
            let Some(owner) = v.node_owner(&me) else { continue };
            let Some(offer) = v.members[&owner].nodes.get(&me) else { continue };
            let holds =
                ctx.replicator.as_ref().and_then(|r| r.stats(id)).map_or(0, |s| s.held_for_others);
            offered += offer.storage;
            held += holds;
            let to_come = offer.storage.saturating_sub(holds);
            if to_come > free {
                short.push(format!(
                    "{} (offered {}, holds {})",
                    v.charter.name,
                    crate::fmt::bytes(offer.storage),
                    crate::fmt::bytes(holds)
                ));
            }
        }
    }
    let to_come = offered.saturating_sub(held);
    let says = format!(
        "{} free on {}; offered {}, holding {} of it",
        crate::fmt::bytes(free),
        root.display(),
        crate::fmt::bytes(offered),
        crate::fmt::bytes(held)
    );
    if !short.is_empty() || to_come > free {
        let which = if short.is_empty() { "all pools together".into() } else { short.join(", ") };
        check(
            "disk",
            "fail",
            format!("{says}: the disk cannot hold what was offered ({which})"),
            Some("free space, or offer less: `kith offer --storage SIZE`".into()),
        )
    } else if free < LOW_DISK {
        check("disk", "warn", format!("{says}: little space left"), Some("free space".into()))
    } else {
        check("disk", "ok", says, None)
    }
}

fn short(id: &impl std::fmt::Display) -> String {
    id.to_string().chars().take(8).collect()
}

/// Peers' clocks against this one's, from their last answers to pings.
fn clocks(peers: &[kith_node::net::peers::PeerInfo]) -> Check {
    let offsets: Vec<(String, i64)> = peers
        .iter()
        .filter_map(|p| Some((short(&p.id), p.pong.as_ref()?.clock_offset_ms?)))
        .collect();
    if offsets.is_empty() {
        return check("clock", "ok", "no peer has told its time yet".into(), None);
    }
    let worst = offsets.iter().map(|(_, o)| o.abs()).max().unwrap_or(0);
    let off: Vec<String> = offsets
        .iter()
        .filter(|(_, o)| o.abs() > CLOCK_WARN_MS)
        .map(|(p, o)| format!("{p} {}{} s", if *o > 0 { "+" } else { "-" }, (o.abs() + 500) / 1000))
        .collect();
    let fix = Some(
        "set the clocks right: `timedatectl set-ntp true` where there is a time server; by hand where there is none".into(),
    );
    if worst > CLOCK_FAIL_MS {
        check(
            "clock",
            "fail",
            format!(
                "peers' clocks differ from this one's: {} (what this node signs carries its time)",
                off.join(", ")
            ),
            fix,
        )
    } else if worst > CLOCK_WARN_MS {
        check(
            "clock",
            "warn",
            format!("peers' clocks differ from this one's: {}", off.join(", ")),
            fix,
        )
    } else {
        check("clock", "ok", format!("within {} ms of {} peers", worst, offsets.len()), None)
    }
}

/// Peers on another kith version.
fn versions(peers: &[kith_node::net::peers::PeerInfo]) -> Check {
    let mine = env!("CARGO_PKG_VERSION");
    let told: Vec<(String, String)> = peers
        .iter()
        .filter_map(|p| Some((short(&p.id), p.pong.as_ref()?.version.clone()?)))
        .collect();
    let other: Vec<String> =
        told.iter().filter(|(_, v)| v != mine).map(|(p, v)| format!("{p} runs {v}")).collect();
    if other.is_empty() {
        let says = match told.len() {
            0 => "no peer has told its version yet".to_string(),
            n => format!("the {n} peers that answered run kith {mine}, as this node does"),
        };
        check("versions", "ok", says, None)
    } else {
        check(
            "versions",
            "warn",
            format!("this node runs kith {mine}; {}", other.join(", ")),
            Some("upgrade the older ones (nodes of one version understand each other best)".into()),
        )
    }
}
