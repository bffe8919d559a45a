//! Pool scenario and benchmarks: an object survives its writer, repair after a holder's loss,
//! put throughput into a pool against a local put, and document convergence over many nodes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::figures::round;
use crate::net::{Layout, Testnet};

const LONG: Duration = Duration::from_secs(600);

/// What the scenario measured.
#[derive(Debug, Default)]
pub struct PoolReport {
    /// Object size.
    pub bytes: u64,
    /// Local put of a same-sized object on the writer (s).
    pub local_put: f64,
    /// Put into the pool, holders acknowledged (s), and the replication part of it.
    pub pool_put: f64,
    /// The replication part of the pool put (s).
    pub pool_replicate: f64,
    /// From starting the restored node to it listing the pool (s).
    pub recover: f64,
    /// `kith get` on the restored node (s).
    pub restore: f64,
    /// Whether the restored bytes were identical.
    pub identical: bool,
    /// From killing the writer to full replication without it (s).
    pub repair_writer: f64,
    /// From killing a second holder to full replication without it (s).
    pub repair_holder: f64,
    /// Under-replicated bytes seen while the second repair ran (maximum).
    pub under_max: u64,
    /// The pool's repair_after (s).
    pub repair_after: u64,
    /// Bytes the writer sent during the pool put.
    pub writer_sent: u64,
    /// Convergence: nodes, seconds, and sync bytes sent by all nodes meanwhile.
    pub converge: Option<(usize, f64, u64)>,
}

/// The figures of [`PoolReport`] as a benchmark's JSON line (see [`figures`](crate::figures)).
#[derive(Debug, Clone, Serialize)]
pub struct PoolFigures {
    /// `"pool"`.
    pub bench: &'static str,
    /// Object size (MiB).
    pub mib: u64,
    /// Local put of a same-sized object, no pool (s).
    pub local_put_s: f64,
    /// Put into the pool, 3 holders acknowledged (s).
    pub pool_put_s: f64,
    /// The replication part of the pool put (s).
    pub pool_replicate_s: f64,
    /// Local put (MB/s).
    pub local_put_mbps: f64,
    /// Put into the pool (MB/s).
    pub pool_put_mbps: f64,
    /// Pool put throughput over local put throughput.
    pub pool_put_over_local: f64,
    /// What the writer sent during the pool put (MB): one copy with chain replication.
    pub writer_sent_mb: f64,
    /// The writer's identity restored on a new node: start to the pool found (s).
    pub pool_found_after_writer_loss_s: f64,
    /// `kith get` of the object on that node (s).
    pub restore_after_writer_loss_s: f64,
    /// Whether the restored bytes were identical.
    pub identical: bool,
    /// The pool's `repair_after` during the run (s).
    pub repair_after_setting_s: u64,
    /// From killing the writer to full replication without it (s).
    pub repair_after_writer_loss_s: f64,
    /// From killing a second holder to full replication without it (s).
    pub repair_after_holder_loss_s: f64,
    /// Under-replicated bytes at most, during the second repair (MB).
    pub under_replicated_peak_mb: f64,
    /// Nodes in the convergence run, if it ran.
    pub converge_nodes: Option<usize>,
    /// A role change reaching every node (s).
    pub converge_s: Option<f64>,
    /// Sync bytes all nodes sent meanwhile (KB).
    pub converge_sync_kb: Option<f64>,
}

/// Bytes node `i` served since it started.
fn served(net: &Testnet, i: usize) -> Result<u64> {
    net.json(i, &["status"])?["served"]["bytes"].as_u64().context("served bytes")
}

/// A put into a pool of 5 whose nodes each have a link of `link_mbit` Mbit/s each way: what
/// limits a put on a LAN of separate machines is the links, not the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct LinkFigures {
    /// `"pool_link"`.
    pub bench: &'static str,
    /// Object size (MiB).
    pub mib: u64,
    /// Each node's link (Mbit/s each way).
    pub link_mbit: u32,
    /// Put into the pool, 3 replicas, every holder acknowledged (s).
    pub pool_put_s: f64,
    /// What the writer sent meanwhile (MB).
    pub writer_sent_mb: f64,
    /// Copies the other nodes took (bytes over the object's).
    pub copies_to_others: f64,
    /// One copy through the writer's link at its rate (s): no put that sends every byte
    /// from the writer at least once can be faster.
    pub one_copy_at_link_s: f64,
    /// Every other node's copy sent through the writer's link at its rate (s): a writer that
    /// sends each holder its copy itself (kith before chain replication, or `scp` to each).
    pub every_copy_from_writer_s: f64,
    /// `one_copy_at_link_s` over the put's time.
    pub put_over_one_copy: f64,
    /// `every_copy_from_writer_s` over the put's time.
    pub put_over_every_copy_from_writer: f64,
}

/// Runs [`LinkFigures`]'s put: five nodes in namespaces on one bridge, each link shaped to
/// `mbit` Mbit/s with `tc tbf`, 3 replicas, `mib` MiB of random data put from node 0.
pub fn linked(kith: &Path, mib: u64, mbit: u32) -> Result<LinkFigures> {
    let bytes = mib << 20;
    let mut net = pool_on(Testnet::new(kith, 5, Layout::Namespaces)?, 5, 3, "10m")?;
    net.wait_for(LONG, "every node to see three replicas", |net| {
        Ok((0..5).all(|i| show(net, i).is_ok_and(|v| v["charter"]["replicas"] == 3)))
    })?;
    for i in 0..5 {
        net.lan().context("namespaces")?.shape(i, mbit)?;
    }
    let src = net.dir().join("linked.bin");
    crate::transfer::write_random_seeded(&src, bytes, 3)?;
    crate::transfer::settle()?;
    let sent = served(&net, 0)?;
    let t = Instant::now();
    let put = net.json(0, &["put", src.to_str().context("path")?, "--pool", "street"])?;
    let secs = t.elapsed().as_secs_f64();
    let writer_sent = served(&net, 0)? - sent;
    if put["pool"]["complete"] != true {
        bail!("the pool put was incomplete: {put}");
    }
    let me = net.id(0)?;
    let to_others: u64 = put["pool"]["acks"]
        .as_array()
        .context("acks")?
        .iter()
        .filter(|a| a["node"] != me.as_str())
        .filter_map(|a| a["bytes"].as_u64())
        .sum();
    let line = |b: u64| b as f64 * 8.0 / (mbit as f64 * 1e6);
    let (one, every) = (line(bytes), line(to_others));
    Ok(LinkFigures {
        bench: "pool_link",
        mib,
        link_mbit: mbit,
        pool_put_s: round(secs, 3),
        writer_sent_mb: round(writer_sent as f64 / 1e6, 1),
        copies_to_others: round(to_others as f64 / bytes as f64, 2),
        one_copy_at_link_s: round(one, 3),
        every_copy_from_writer_s: round(every, 3),
        put_over_one_copy: round(one / secs, 3),
        put_over_every_copy_from_writer: round(every / secs, 3),
    })
}

impl LinkFigures {
    /// A markdown summary.
    pub fn markdown(&self) -> String {
        format!(
            "| {} MiB, pool of 5, 3 replicas, every link {} Mbit/s | s |\n| --- | ---: |\n\
             | put --pool, every holder acknowledged | {:.2} |\n\
             | one copy through the writer's link (the floor) | {:.2} |\n\
             | every holder's copy through the writer's link ({:.2} copies) | {:.2} |\n\n\
             The writer sent {:.1} MB. Put / one copy at the link's rate: {:.2}; put / every copy from the writer: {:.2}.\n",
            self.mib,
            self.link_mbit,
            self.pool_put_s,
            self.one_copy_at_link_s,
            self.copies_to_others,
            self.every_copy_from_writer_s,
            self.writer_sent_mb,
            self.put_over_one_copy,
            self.put_over_every_copy_from_writer
        )
    }
}

fn show(net: &Testnet, i: usize) -> Result<Value> {
    net.json(i, &["pool", "show", "street"])
}

fn under(v: &Value) -> u64 {
    v["replication"]["under_replicated_bytes"].as_u64().unwrap_or(u64::MAX)
}

/// Builds a pool of nodes `0..n` of a testnet of `total` (node 0 founds it); each offers
/// storage in its own zone.
fn pool(kith: &Path, n: usize, total: usize, replicas: u64, repair_after: &str) -> Result<Testnet> {
    pool_on(Testnet::new(kith, total, Layout::Loopback)?, n, replicas, repair_after)
}

/// [`pool`] on the testnet `net`.
fn pool_on(mut net: Testnet, n: usize, replicas: u64, repair_after: &str) -> Result<Testnet> {
    for i in 0..n {
        net.kith_ok(i, &["init"])?;
        net.start(i)?;
    }
    net.kith_ok(0, &["pool", "create", "street"])?;
    for i in 1..n {
        let t = net.kith_ok(0, &["pool", "invite", "street"])?;
        net.kith_ok(i, &["pool", "join", t.trim()])?;
    }
    for i in 0..n {
        net.kith_ok(i, &["offer", "street", "--storage", "10GiB", "--zone", &format!("z{i}")])?;
    }
    net.kith_ok(0, &["pool", "set", "street", "repair_after", repair_after])?;
    let want = n as u64 * (10 << 30);
    net.wait_for(LONG, "offers to converge", |net| {
        Ok((0..n).all(|i| show(net, i).is_ok_and(|v| v["capacity"]["offered"] == want)))
    })?;
    net.kith_ok(0, &["pool", "set", "street", "replicas", &replicas.to_string()])?;
    Ok(net)
}

/// The scenario: 5 nodes, `mib` MiB put into the pool, the writer lost for good, its identity
/// restored on a new machine, then one more holder lost.
pub fn scenario(kith: &Path, mib: u64, converge_nodes: usize) -> Result<PoolReport> {
    let bytes = mib << 20;
    let mut r = PoolReport { bytes, repair_after: 10, ..PoolReport::default() };
    // Six homes: five pool nodes and the machine the writer's identity is restored on.
    let mut net = pool(kith, 5, 6, 3, "10s")?;
    let local = net.dir().join("local.bin");
    let pooled = net.dir().join("pooled.bin");
    crate::transfer::write_random_seeded(&local, bytes, 1)?;
    crate::transfer::write_random_seeded(&pooled, bytes, 2)?;
    crate::transfer::settle()?;
    let t = Instant::now();
    net.kith_ok(0, &["put", local.to_str().context("path")?])?;
    r.local_put = t.elapsed().as_secs_f64();
    crate::transfer::settle()?;
    let sent = served(&net, 0)?;
    let t = Instant::now();
    let put = net.json(0, &["put", pooled.to_str().context("path")?, "--pool", "street"])?;
    r.pool_put = t.elapsed().as_secs_f64();
    r.writer_sent = served(&net, 0)? - sent;
    r.pool_replicate = put["pool"]["seconds"].as_f64().unwrap_or(0.0);
    if put["pool"]["complete"] != true {
        bail!("the pool put was incomplete: {put}");
    }
    eprintln!("local put {:.2} s, pool put {:.2} s", r.local_put, r.pool_put);
    let id = put["id"].as_str().context("id")?.to_string();
    net.wait_for(LONG, "full replication", |net| Ok(under(&show(net, 1)?) == 0))?;

    // The writer's machine is gone for good.
    net.kill(0)?;
    let killed = Instant::now();
    let new = 5;
    net.share_identity(new, 0)?;
    let t = Instant::now();
    net.start(new)?;
    net.wait_for(LONG, "the restored identity to find its pool", |net| {
        Ok(net.json(new, &["pool", "ls"])?.as_array().is_some_and(|a| a.len() == 1))
    })?;
    r.recover = t.elapsed().as_secs_f64();
    let back = net.dir().join("back.bin");
    let t = Instant::now();
    net.kith_ok(new, &["get", &id, "-o", back.to_str().context("path")?])?;
    r.restore = t.elapsed().as_secs_f64();
    r.identical = files_equal(&back, &pooled)?;
    std::fs::remove_file(&back)?;
    eprintln!("recovered the pool in {:.2} s, restored in {:.2} s", r.recover, r.restore);
    net.wait_for(LONG, "repair after the writer's loss", |net| {
        let v = show(net, 1)?;
        let out = v["replication"]["holders"]
            .as_array()
            .is_some_and(|hs| hs.iter().any(|h| h["state"] == "out"));
        Ok(out && under(&v) == 0)
    })?;
    r.repair_writer = killed.elapsed().as_secs_f64();

    // One more holder goes.
    net.kill(1)?;
    let killed = Instant::now();
    net.wait_for(LONG, "repair after a holder's loss", |net| {
        let v = show(net, 2)?;
        let u = under(&v);
        if u != u64::MAX {
            r.under_max = r.under_max.max(u);
        }
        let out = v["replication"]["holders"]
            .as_array()
            .is_some_and(|hs| hs.iter().filter(|h| h["state"] == "out").count() == 2);
        Ok(out && u == 0)
    })?;
    r.repair_holder = killed.elapsed().as_secs_f64();
    eprintln!("repair {:.1} s / {:.1} s", r.repair_writer, r.repair_holder);
    drop(net);

    if converge_nodes > 1 {
        r.converge = Some(converge(kith, converge_nodes)?);
    }
    Ok(r)
}

/// A membership change in a pool of `n` nodes: time until every node has it, and the sync
/// bytes all nodes sent meanwhile.
fn converge(kith: &Path, n: usize) -> Result<(usize, f64, u64)> {
    let mut net = pool(kith, n, n, 1, "10m")?;
    let sent = |net: &Testnet| -> Result<u64> {
        (0..n).map(|i| Ok(show(net, i)?["sync_bytes"]["sent"].as_u64().unwrap_or(0))).sum()
    };
    let before = sent(&net)?;
    let victim = show(&net, 0)?["members"]
        .as_array()
        .context("members")?
        .iter()
        .find(|m| m["role"] == "member")
        .and_then(|m| m["id"].as_str().map(str::to_string))
        .context("a member")?;
    let t0 = Instant::now();
    net.kith_ok(0, &["pool", "set", "street", &format!("role:{}", &victim[..16]), "admin"])?;
    net.wait_for(LONG, "every node to see the new admin", |net| {
        Ok((0..n).all(|i| {
            show(net, i).is_ok_and(|v| {
                v["members"].as_array().is_some_and(|ms| {
                    ms.iter().any(|m| m["id"] == victim.as_str() && m["role"] == "admin")
                })
            })
        }))
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let bytes = sent(&net)? - before;
    Ok((n, secs, bytes))
}

pub(crate) fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba)?;
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na])?;
            if k == 0 {
                return Ok(false);
            }
            nb += k;
        }
        if na == 0 {
            return Ok(fb.read(&mut bb)? == 0);
        }
        if ba[..na] != bb[..na] {
            return Ok(false);
        }
    }
}

impl PoolReport {
    /// The figures for the JSON line.
    pub fn figures(&self) -> PoolFigures {
        let mb = self.bytes as f64 / 1e6;
        let s3 = |x: f64| round(x, 3);
        PoolFigures {
            bench: "pool",
            mib: self.bytes >> 20,
            local_put_s: s3(self.local_put),
            pool_put_s: s3(self.pool_put),
            pool_replicate_s: s3(self.pool_replicate),
            local_put_mbps: round(mb / self.local_put, 1),
            pool_put_mbps: round(mb / self.pool_put, 1),
            pool_put_over_local: s3(self.local_put / self.pool_put),
            writer_sent_mb: round(self.writer_sent as f64 / 1e6, 1),
            pool_found_after_writer_loss_s: s3(self.recover),
            restore_after_writer_loss_s: s3(self.restore),
            identical: self.identical,
            repair_after_setting_s: self.repair_after,
            repair_after_writer_loss_s: s3(self.repair_writer),
            repair_after_holder_loss_s: s3(self.repair_holder),
            under_replicated_peak_mb: round(self.under_max as f64 / 1e6, 1),
            converge_nodes: self.converge.map(|c| c.0),
            converge_s: self.converge.map(|c| s3(c.1)),
            converge_sync_kb: self.converge.map(|c| round(c.2 as f64 / 1e3, 1)),
        }
    }

    /// A markdown summary.
    pub fn markdown(&self) -> String {
        let mb = self.bytes as f64 / 1e6;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| {} MiB, pool of 5, 3 replicas, loopback | s | MB/s |",
            self.bytes >> 20
        );
        let _ = writeln!(out, "| --- | ---: | ---: |");
        let _ = writeln!(
            out,
            "| local put (no pool) | {:.2} | {:.0} |",
            self.local_put,
            mb / self.local_put
        );
        let _ = writeln!(
            out,
            "| put --pool (local put + 3 holders acknowledged) | {:.2} | {:.0} |",
            self.pool_put,
            mb / self.pool_put
        );
        let _ = writeln!(
            out,
            "| of which replication | {:.2} | {:.0} |",
            self.pool_replicate,
            mb / self.pool_replicate
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "The writer sent {:.1} MB during the pool put ({:.2} copies of the object).",
            self.writer_sent as f64 / 1e6,
            self.writer_sent as f64 / self.bytes as f64
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Pool put / local put throughput: {:.2}.",
            self.local_put / self.pool_put
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Writer killed; identity restored on a new node: pool found in {:.2} s, `kith get` {:.2} s, bytes identical: {}.",
            self.recover, self.restore, self.identical
        );
        let _ = writeln!(
            out,
            "Repair (repair_after = {} s): writer's loss to full replication {:.1} s; a second holder's loss to full replication {:.1} s (under-replicated peak {:.1} MB).",
            self.repair_after,
            self.repair_writer,
            self.repair_holder,
            self.under_max as f64 / 1e6
        );
        if let Some((n, s, b)) = self.converge {
            let _ = writeln!(
                out,
                "Convergence: a role change reached all {n} nodes in {s:.2} s; all nodes sent {:.1} KB of sync turns meanwhile (including the idle rounds of every pair every 3 s).",
                b as f64 / 1e3
            );
        }
        out
    }
}
