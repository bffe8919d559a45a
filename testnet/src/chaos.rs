//! `testnet chaos`: a pool of real daemons in network namespaces under a workload and a fault
//! schedule drawn from a seed, then a check of what must hold once the faults stop.
//!
//! The schedule (work and faults, with their times) is a pure function of the seed and the
//! run's length: the same seed gives the same schedule, printed before the run. What a step
//! meets (which node is up when a put starts, how far a put got when its node is killed) still
//! depends on timing; the schedule up to a violation is printed with it, so it can be replayed.
//!
//! Faults: `kill -9` and restart of a node (also of the writer in the middle of its put), a
//! restart from a copy of the home taken earlier (stale documents, stale peer table, chunks it
//! acknowledged since then gone), partitions of the LAN into two or three groups (nftables in
//! each namespace) and their healing, packet loss on a node's link (nftables `numgen random`),
//! a slow link (`tc tbf`), a holder's disk filled up (each home is a tmpfs of its own), a
//! node's wall clock a few minutes off (restarted under Debian's libfaketime), what a node
//! sends delayed and reordered (see [`crate::delay`]), a peer sending
//! garbage on every protocol (see [`crate::garbage`]), and a member leaving for good while a
//! new node joins.
//!
//! Checked at the end, after the faults stop and the nodes settle: every acknowledged put
//! reads back byte for byte on its owner's node once its local copy is forgotten (so from the
//! pool's holders); nothing is under-replicated; every node holds the same pool document
//! heads and ledger statement; the ledger matches its evidence; every site serves its latest
//! version from every node; `kith verify` passes on every node. During the run: no node exits
//! on its own and no daemon's memory passes [`RSS_LIMIT_MB`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::net::{Layout, Testnet};
use crate::netns::in_ns;

/// A daemon using more memory than this (resident, MiB) is a violation.
pub const RSS_LIMIT_MB: u64 = 1024;
/// Each home's disk (a tmpfs), MiB: room for the 512 MiB each node offers and, beside it, its
/// own objects and the garbage of removals for an hour of the workload (at 768 MiB seed 1's
/// hour filled every home by minute ~50).
const DISK_MB: u64 = 1024;
/// How long the nodes get, after the faults stop, to agree and repair.
const SETTLE_LIMIT: Duration = Duration::from_secs(420);
/// The pool's name.
const POOL: &str = "street";
/// How long a command against a node may take during the run before it counts as failed.
const STEP_LIMIT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Pool nodes at the start (one more joins during the run).
    pub nodes: usize,
    /// How long the workload and the faults run.
    pub seconds: u64,
    /// The schedule's seed.
    pub seed: u64,
    /// Keep the homes and logs afterwards (always kept when something was violated).
    pub keep: bool,
}

/// Debian's libfaketime (package `faketime`), for a node's skewed clock.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A step of the schedule.
#[allow(missing_docs)] // each variant's line says what its fields are
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Put `kib` KiB of seeded bytes into the pool from node `node`.
    Put { node: usize, kib: u64, seed: u64 },
    /// Read back acknowledged object number `pick` (modulo their count) on its owner's node.
    Get { pick: u64 },
    /// The owner of an acknowledged put takes it out of the pool (`kith rm`): the larger of
    /// two drawn with `pick`, so that long runs do not fill the pool.
    Rm { pick: u64 },
    /// Node `node` publishes a new version of its site.
    Publish { node: usize },
    /// Node 0 (the founder) makes member `node` an admin or a member again.
    Role { node: usize, admin: bool },
    /// Node 0 sets the pool's `audit_every`.
    Setting { audit_every_s: u64 },
    /// `kill -9` of node `node`, restarted after `down_s`.
    Kill { node: usize, down_s: u64 },
    /// `kill -9` of the node of the newest put still running, restarted after `down_s`.
    KillWriter { down_s: u64 },
    /// Node `node` is killed and its home copied (restored later by `Stale`).
    Backup { node: usize },
    /// Node `node` is killed and restarted from the copy of its home `Backup` took.
    Stale { node: usize },
    /// The LAN split into groups for `for_s`.
    Partition { groups: Vec<Vec<usize>>, for_s: u64 },
    /// `percent` of node `node`'s packets dropped (both ways) for `for_s`.
    Loss { node: usize, percent: u64, for_s: u64 },
    /// Node `node`'s link shaped to `mbit` Mbit/s for `for_s`.
    Slow { node: usize, mbit: u64, for_s: u64 },
    /// Node `node`'s disk filled to its last few KiB for `for_s`.
    DiskFull { node: usize, for_s: u64 },
    /// Node `node` leaves the pool for good and a new node joins.
    Replace { node: usize },
    /// Node `node` restarted with its wall clock `ahead_s` ahead (behind if negative) for
    /// `for_s`, then restarted on the right time (libfaketime; its monotonic clock stays true).
    Skew { node: usize, ahead_s: i64, for_s: u64 },
    /// A peer on the LAN (in the spare node's namespace) sends garbage on every protocol to
    /// every running node for `for_s` (see [`crate::garbage`]).
    Garbage { for_s: u64, seed: u64 },
    /// What node `node` sends held `ms` plus up to `jitter_ms` (so packets overtake each
    /// other) for `for_s` (see [`crate::delay`]).
    Delay { node: usize, ms: u64, jitter_ms: u64, for_s: u64 },
}

impl Step {
    /// The fault's kind, or `None` for work.
    fn fault(&self) -> Option<&'static str> {
        Some(match self {
            Step::Kill { .. } => "kill",
            Step::KillWriter { .. } => "kill_mid_put",
            Step::Backup { .. } => "kill_and_copy_home",
            Step::Stale { .. } => "restart_from_old_home",
            Step::Partition { .. } => "partition",
            Step::Loss { .. } => "loss",
            Step::Slow { .. } => "slow_link",
            Step::DiskFull { .. } => "disk_full",
            Step::Replace { .. } => "leave_and_join",
            Step::Skew { .. } => "clock_skew",
            Step::Garbage { .. } => "garbage_peer",
            Step::Delay { .. } => "delay_and_reorder",
            _ => return None,
        })
    }
}

/// A step at its time (seconds from the start of the run).
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    /// When.
    pub at_s: f64,
    /// What.
    #[serde(flatten)]
    pub step: Step,
}

/// splitmix64: small, fast, and the same everywhere (also the garbage peer's).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// The schedule of a run: work every second or two, a fault every `seconds / 14` or so, and
/// every kind of fault at least once. Node 0 (the founder, who invites and sets) is killed
/// like the others but never leaves; the leaving node never comes back.
pub fn schedule(nodes: usize, seconds: u64, seed: u64) -> Vec<Timed> {
    let mut r = Rng(seed);
    let mut out = Vec::new();
    let end = seconds as f64;
    // Work.
    let mut t = 2.0;
    while t < end {
        let step = match r.below(26) {
            0..=8 => {
                // Mostly small objects, some of a few MiB, now and then 12 MiB.
                let kib = match r.below(10) {
                    0..=5 => r.range(1, 256),
                    6..=8 => r.range(256, 4096),
                    _ => 12 << 10,
                };
                Step::Put { node: r.below(nodes as u64) as usize, kib, seed: r.next() }
            }
            9..=14 => Step::Get { pick: r.next() },
            15..=17 => Step::Publish { node: r.below(nodes as u64) as usize },
            18 => {
                Step::Role { node: r.range(1, nodes as u64 - 1) as usize, admin: r.below(2) == 0 }
            }
            19 => Step::Setting { audit_every_s: r.range(20, 60) },
            _ => Step::Rm { pick: r.next() },
        };
        out.push(Timed { at_s: (t * 10.0).round() / 10.0, step });
        t += 0.5 + r.below(1500) as f64 / 1000.0;
    }
    // Faults: the kinds in a seeded order, then more drawn at random, spread over the run
    // (the last ends well before it does).
    let leaver = nodes - 1;
    let pick = |r: &mut Rng| r.range(0, leaver as u64 - 1) as usize;
    let mut kinds: Vec<u64> = (0..11).collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, r.below(i as u64 + 1) as usize);
    }
    let slots = (seconds / 12).max(9);
    while (kinds.len() as u64) < slots - 1 {
        kinds.push(r.below(11));
    }
    let span = end * 0.8;
    for (k, kind) in kinds.iter().enumerate() {
        let at = 5.0 + span * k as f64 / kinds.len() as f64 + r.below(2000) as f64 / 1000.0;
        let step = match kind {
            0 => Step::Kill { node: pick(&mut r), down_s: r.range(2, 15) },
            1 => Step::KillWriter { down_s: r.range(2, 10) },
            2 => {
                let node = pick(&mut r);
                out.push(Timed { at_s: (at * 10.0).round() / 10.0, step: Step::Backup { node } });
                Step::Stale { node }
            }
            3 => {
                let parts = r.range(2, 3) as usize;
                let mut groups = vec![Vec::new(); parts];
                for n in 0..nodes + 1 {
                    groups[r.below(parts as u64) as usize].push(n);
                }
                groups.retain(|g| !g.is_empty());
                Step::Partition { groups, for_s: r.range(5, 25) }
            }
            4 => Step::Loss { node: pick(&mut r), percent: r.range(5, 30), for_s: r.range(5, 20) },
            5 => Step::Slow { node: pick(&mut r), mbit: r.range(2, 20), for_s: r.range(5, 20) },
            6 => Step::DiskFull { node: pick(&mut r), for_s: r.range(5, 20) },
            7 => {
                // A few minutes either way.
                let ahead_s = r.range(60, 300) as i64 * if r.below(2) == 0 { 1 } else { -1 };
                Step::Skew { node: pick(&mut r), ahead_s, for_s: r.range(10, 30) }
            }
            8 => Step::Garbage { for_s: r.range(10, 30), seed: r.next() },
            9 => Step::Delay {
                node: pick(&mut r),
                ms: r.range(20, 200),
                jitter_ms: r.range(5, 50),
                for_s: r.range(5, 20),
            },
            _ => Step::Kill { node: pick(&mut r), down_s: r.range(1, 5) },
        };
        // A stale restart comes a while after its copy, with puts in between.
        let at = if matches!(step, Step::Stale { .. }) { at + span / 8.0 } else { at };
        out.push(Timed { at_s: (at.min(span + 5.0) * 10.0).round() / 10.0, step });
    }
    out.push(Timed { at_s: (end * 7.0).round() / 10.0, step: Step::Replace { node: leaver } });
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    spread_stale_restores(&mut out, end);
    out
}

/// Least time between two restarts from old homes (s). A restart from a copy of the home
/// destroys what the node took in since the copy, like a lost disk; the pool keeps `replicas`
/// copies so that it survives losing fewer than that many at once, and the restarted node
/// fetches back what it lacks within seconds. Several restarts at one moment would roll back
/// every holder of a recent put together: a loss no replica count can prevent, and not what
/// the run is to test (seed 1's hour stacked four at the end of the faults: finding 12).
pub const STALE_GAP_S: f64 = 90.0;

/// Moves restarts from old homes apart by [`STALE_GAP_S`], dropping any that then would come
/// after the run (its copy is then only a kill).
fn spread_stale_restores(out: &mut Vec<Timed>, end: f64) {
    let mut last = f64::NEG_INFINITY;
    out.retain_mut(|s| {
        if !matches!(s.step, Step::Stale { .. }) {
            return true;
        }
        let at = s.at_s.max(last + STALE_GAP_S);
        if at >= end - 5.0 {
            return false;
        }
        s.at_s = (at * 10.0).round() / 10.0;
        last = s.at_s;
        true
    });
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
}

/// One put we asked for.
#[derive(Debug, Clone)]
struct Put {
    node: usize,
    file: PathBuf,
    bytes: u64,
    id: Option<String>,
    /// `Some(true)` once a `kith rm` of it was acknowledged, `Some(false)` if one was tried
    /// and did not answer (it may have been carried out), or was acknowledged and then the
    /// node was put back to a copy of its home older than the removal (which a peer may or
    /// may not have taken first): either way it is not read back.
    removed: Option<bool>,
    /// When the removal was acknowledged (the count of acknowledged removals then).
    removed_seq: u64,
}

/// The run's figures; the last line of its output, as JSON.
#[derive(Debug, Default, Serialize)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Pool nodes at the start.
    pub nodes: usize,
    /// Seconds of workload and faults.
    pub seconds: u64,
    /// Puts started.
    pub puts: u64,
    /// Puts acknowledged (the command succeeded).
    pub puts_acknowledged: u64,
    /// Reads of acknowledged objects during the run.
    pub gets: u64,
    /// Of them, how many failed (a node down, a partition); a wrong byte is a violation.
    pub gets_failed: u64,
    /// Site versions published.
    pub publishes: u64,
    /// Acknowledged puts taken out of the pool again (`kith rm` acknowledged).
    pub removes: u64,
    /// Role and setting changes acknowledged.
    pub settings: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Violations found (see `violation_list`).
    pub violations: usize,
    /// What was violated.
    pub violation_list: Vec<String>,
    /// Bytes of acknowledged puts that did not read back.
    pub bytes_lost: u64,
    /// From the end of the faults to every check holding (s).
    pub converged_after_s: f64,
    /// Objects of puts that were never acknowledged (the writer killed or its disk full
    /// mid-put) listed in the pool with blobs no node holds: they cannot get their replicas
    /// back, and the run names them (ids, 8 bytes hex) instead of waiting for them.
    pub lost_unacknowledged: Vec<String>,
    /// The most memory a daemon used (resident, MiB).
    pub max_rss_mb: u64,
    /// Streams of garbage a bad peer opened to the nodes.
    pub garbage_streams: u64,
    /// Packets held by delayed links, and of them, sent after a later one.
    pub delayed_packets: u64,
    /// See `delayed_packets`.
    pub reordered_packets: u64,
}

/// The run.
struct Run {
    net: Testnet,
    cfg: ChaosConfig,
    report: ChaosReport,
    /// Nodes that should be running.
    up: Vec<bool>,
    /// Nodes out of the pool for good.
    gone: Vec<bool>,
    /// (when, node): restarts due.
    restarts: Vec<(Instant, usize)>,
    /// (when, what): faults to undo.
    undo: Vec<(Instant, Step)>,
    /// Puts in flight: the child and the put's number.
    running: Vec<(Child, usize)>,
    puts: Vec<Put>,
    /// Each node's site: the latest acknowledged version's mark, then the marks of the
    /// publishes tried after it that did not answer (a command that failed or was cut short
    /// may still have been carried out, as in any system: any of these may be served).
    sites: BTreeMap<usize, Vec<String>>,
    /// The marks of every publish a node tried since a copy of its home was taken, and the
    /// marks it served then (any may be served after it is put back to that copy).
    site_history: BTreeMap<usize, Vec<String>>,
    /// Publishes tried (each version's mark is unique).
    publish_tries: u64,
    /// Garbage peers sending (joined at the end).
    garbage: Vec<std::thread::JoinHandle<Result<crate::garbage::Sent>>>,
    /// Links delayed now, by node.
    delays: BTreeMap<usize, crate::delay::DelayedLink>,
    /// The copies of homes taken by `Backup`, with the count of acknowledged removals then.
    backups: BTreeMap<usize, (PathBuf, u64)>,
    /// Removals acknowledged so far.
    rms_acked: u64,
    started: Instant,
    done: Vec<Timed>,
}

/// Runs the chaos scenario with `kith` and returns its report (violations in it, not as an
/// error; an error is a run that could not be carried out).
pub fn run(kith: &Path, cfg: ChaosConfig) -> Result<ChaosReport> {
    if cfg.nodes < 4 {
        bail!("a chaos run needs at least 4 nodes, not {}", cfg.nodes);
    }
    // What the faults use, checked before anything starts (not a minute into the run).
    for (cmd, package) in [("nft", "nftables"), ("tc", "iproute2"), ("ip", "iproute2")] {
        if Command::new(cmd).arg("-V").output().is_err() {
            bail!("`{cmd}` is missing: install Debian's {package} (scripts/test does)");
        }
    }
    if !Path::new(FAKETIME_LIB).exists() {
        bail!("{FAKETIME_LIB} is missing: install Debian's faketime (scripts/test does)");
    }
    let steps = schedule(cfg.nodes, cfg.seconds, cfg.seed);
    eprintln!(
        "chaos: seed {}, {} nodes, {} s, {} steps",
        cfg.seed,
        cfg.nodes,
        cfg.seconds,
        steps.len()
    );
    for s in steps.iter().filter(|s| s.step.fault().is_some()) {
        eprintln!("  {:7.1}s {}", s.at_s, serde_json::to_string(&s.step)?);
    }
    // Pool nodes, one that joins later.
    let total = cfg.nodes + 1;
    let net = Testnet::new(kith, total, Layout::Namespaces)?;
    let disks = Disks::mount(&net, total)?;
    let mut run = Run {
        net,
        report: ChaosReport {
            seed: cfg.seed,
            nodes: cfg.nodes,
            seconds: cfg.seconds,
            ..Default::default()
        },
        up: vec![false; total],
        gone: vec![false; total],
        restarts: Vec::new(),
        undo: Vec::new(),
        running: Vec::new(),
        puts: Vec::new(),
        sites: BTreeMap::new(),
        publish_tries: 0,
        garbage: Vec::new(),
        delays: BTreeMap::new(),
        backups: BTreeMap::new(),
        rms_acked: 0,
        site_history: BTreeMap::new(),
        started: Instant::now(),
        done: Vec::new(),
        cfg,
    };
    let result = run.go(steps);
    let report = std::mem::take(&mut run.report);
    if !report.violation_list.is_empty() || run.cfg.keep {
        run.net.keep_dir();
        eprintln!("chaos: homes and logs kept in {}", run.net.dir().display());
    }
    if !report.violation_list.is_empty() {
        eprintln!("chaos: seed {} violated:", report.seed);
        for v in &report.violation_list {
            eprintln!("  {v}");
        }
        eprintln!("chaos: the schedule as carried out:");
        for s in &run.done {
            eprintln!("  {:7.1}s {}", s.at_s, serde_json::to_string(&s.step)?);
        }
        for i in 0..run.up.len() {
            let log = run.net.log(i);
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("chaos: node {i}'s log, last lines:");
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
    }
    // Stop the nodes before the disks go; keep a copy of the homes that saw a violation.
    for i in 0..run.up.len() {
        let _ = run.net.kill(i);
        if !report.violation_list.is_empty() {
            let home = &run.net.nodes[i].home;
            let _ = Command::new("cp")
                .arg("-a")
                .arg(home)
                .arg(run.net.dir().join(format!("kept-node{i}")))
                .status();
        }
    }
    drop(disks);
    result.map(|()| report)
}

impl Run {
    fn go(&mut self, steps: Vec<Timed>) -> Result<()> {
        self.setup()?;
        self.started = Instant::now();
        for step in steps {
            let at = self.started + Duration::from_secs_f64(step.at_s);
            while Instant::now() < at {
                self.tick()?;
                std::thread::sleep(Duration::from_millis(50));
            }
            self.tick()?;
            if let Some(kind) = step.step.fault() {
                *self.report.faults.entry(kind.to_string()).or_default() += 1;
            }
            self.done.push(step.clone());
            self.step(step.step)?;
        }
        let end = self.started + Duration::from_secs(self.cfg.seconds);
        while Instant::now() < end {
            self.tick()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        self.calm()?;
        self.check()
    }

    /// Every pool node up, the pool made, offers in, repair quick.
    fn setup(&mut self) -> Result<()> {
        let n = self.cfg.nodes;
        for i in 0..n {
            self.net.kith_ok(i, &["init"])?;
            self.net.start(i)?;
            self.up[i] = true;
        }
        self.net.wait_for(Duration::from_secs(120), "the nodes to find each other", |net| {
            Ok((0..n).all(|i| {
                net.peers(i).is_ok_and(|ps| {
                    ps.iter().filter(|p| p["state"] == "reachable").count() >= n - 1
                })
            }))
        })?;
        self.net.kith_ok(0, &["pool", "create", POOL, "--replicas", "3", "--as", "node0"])?;
        let ticket = self.net.kith_ok(0, &["pool", "invite", POOL, "--uses", &n.to_string()])?;
        for i in 1..n {
            self.net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", &format!("node{i}")])?;
        }
        for i in 0..n {
            self.offer(i)?;
        }
        for (k, v) in [("repair_after", "15s"), ("audit_every", "30s"), ("record_every", "20s")] {
            self.net.kith_ok(0, &["pool", "set", POOL, k, v])?;
        }
        let want = n as u64 * (512 << 20);
        self.net.wait_for(Duration::from_secs(120), "every node to see the whole pool", |net| {
            Ok((0..n).all(|i| {
                net.json(i, &["pool", "show", POOL]).is_ok_and(|v| v["capacity"]["offered"] == want)
            }))
        })?;
        eprintln!("chaos: pool of {n} nodes ready");
        Ok(())
    }

    fn offer(&self, i: usize) -> Result<()> {
        self.net.kith_ok(i, &["offer", POOL, "--storage", "512MiB", "--zone", &format!("z{i}")])?;
        Ok(())
    }

    fn violation(&mut self, what: String) {
        eprintln!("chaos: VIOLATION at {:.1}s: {what}", self.started.elapsed().as_secs_f64());
        self.report.violation_list.push(what);
    }

    /// Housekeeping between steps: restarts due, faults to undo, puts that finished, nodes
    /// that exited, memory.
    fn tick(&mut self) -> Result<()> {
        let now = Instant::now();
        let due: Vec<usize> =
            self.restarts.iter().filter(|(t, _)| *t <= now).map(|(_, i)| *i).collect();
        self.restarts.retain(|(t, _)| *t > now);
        for i in due {
            self.start(i)?;
        }
        let (ready, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.undo).into_iter().partition(|(t, _)| *t <= now);
        self.undo = later;
        for (_, step) in ready {
            self.heal(&step)?;
        }
        self.reap_puts(false)?;
        for i in 0..self.up.len() {
            if self.up[i] && !self.net.is_running(i) {
                let tail: String =
                    self.net.log(i).lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                self.violation(format!("node {i} exited on its own: {tail}"));
                self.up[i] = false;
                self.start(i)?;
            }
            if self.up[i]
                && let Some(mb) = self.net.pid(i).and_then(rss_mb)
            {
                self.report.max_rss_mb = self.report.max_rss_mb.max(mb);
                if mb > RSS_LIMIT_MB {
                    self.violation(format!("node {i} uses {mb} MiB (limit {RSS_LIMIT_MB})"));
                }
            }
        }
        Ok(())
    }

    fn start(&mut self, i: usize) -> Result<()> {
        if self.up[i] || self.gone[i] {
            return Ok(());
        }
        if let Err(e) = self.net.start(i) {
            self.violation(format!("node {i} did not come back: {e:#}"));
            return Ok(());
        }
        self.up[i] = true;
        Ok(())
    }

    fn kill(&mut self, i: usize, down_s: u64) -> Result<()> {
        if !self.up[i] {
            return Ok(());
        }
        self.net.kill(i)?;
        self.up[i] = false;
        self.restarts.push((Instant::now() + Duration::from_secs(down_s), i));
        Ok(())
    }

    /// The running node nearest `i` (from `i` upwards), if any.
    fn running_from(&self, i: usize) -> Option<usize> {
        let n = self.up.len();
        (0..n).map(|k| (i + k) % n).find(|&k| self.up[k])
    }

    fn step(&mut self, step: Step) -> Result<()> {
        match step.clone() {
            Step::Put { node, kib, seed } => {
                let Some(node) = self.running_from(node) else { return Ok(()) };
                let k = self.puts.len();
                let file = self.net.dir().join(format!("put{k}.bin"));
                crate::transfer::write_random_seeded(&file, kib << 10, seed)?;
                let child = self
                    .net
                    .cmd(node)
                    .args(["put"])
                    .arg(&file)
                    .args(["--pool", POOL, "--json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                self.puts.push(Put {
                    node,
                    file,
                    bytes: kib << 10,
                    id: None,
                    removed: None,
                    removed_seq: 0,
                });
                self.running.push((child, k));
                self.report.puts += 1;
            }
            Step::Get { pick } => {
                let acked: Vec<usize> = (0..self.puts.len())
                    .filter(|&k| self.readable(k) && self.up[self.puts[k].node])
                    .collect();
                if acked.is_empty() {
                    return Ok(());
                }
                let k = acked[(pick % acked.len() as u64) as usize];
                self.report.gets += 1;
                match self.read_back(k)? {
                    Some(true) => {}
                    Some(false) => {
                        let p = &self.puts[k];
                        let what = format!(
                            "object {} put on node {} read back different bytes",
                            p.id.as_deref().unwrap_or("?"),
                            p.node
                        );
                        self.violation(what);
                    }
                    None => self.report.gets_failed += 1,
                }
            }
            Step::Rm { pick } => {
                let live: Vec<usize> = (0..self.puts.len())
                    .filter(|&k| {
                        let n = self.puts[k].node;
                        self.readable(k) && self.up[n] && !self.gone[n]
                    })
                    .collect();
                if live.is_empty() {
                    return Ok(());
                }
                let a = live[(pick % live.len() as u64) as usize];
                let b = live[((pick >> 32) % live.len() as u64) as usize];
                let k = if self.puts[b].bytes > self.puts[a].bytes { b } else { a };
                let (node, id) = (self.puts[k].node, self.puts[k].id.clone().context("id")?);
                let out = self.bounded(node, &["rm", &id])?;
                self.puts[k].removed = Some(out.is_some());
                if out.is_some() {
                    self.report.removes += 1;
                    self.rms_acked += 1;
                    self.puts[k].removed_seq = self.rms_acked;
                }
            }
            Step::Publish { node } => {
                if !self.up[node] || self.gone[node] {
                    return Ok(());
                }
                let dir = self.net.dir().join(format!("site{node}"));
                std::fs::create_dir_all(&dir)?;
                self.publish_tries += 1;
                let mark = format!("site{node} version {}", self.publish_tries);
                std::fs::write(dir.join("index.html"), format!("<p>{mark}</p>\n"))?;
                let name = format!("site{node}");
                let out = self.bounded(
                    node,
                    &["site", "publish", &dir.to_string_lossy(), "--name", &name, "--pool", POOL],
                )?;
                if let Some(h) = self.site_history.get_mut(&node) {
                    h.push(mark.clone());
                }
                if out.is_some() {
                    self.report.publishes += 1;
                    self.sites.insert(node, vec![mark]);
                } else if let Some(marks) = self.sites.get_mut(&node) {
                    marks.push(mark);
                }
            }
            Step::Role { node, admin } => {
                if !self.up[0] || self.gone[node] {
                    return Ok(());
                }
                let key = format!("role:node{node}");
                let role = if admin { "admin" } else { "member" };
                if self.bounded(0, &["pool", "set", POOL, &key, role])?.is_some() {
                    self.report.settings += 1;
                }
            }
            Step::Setting { audit_every_s } => {
                if !self.up[0] {
                    return Ok(());
                }
                let v = format!("{audit_every_s}s");
                if self.bounded(0, &["pool", "set", POOL, "audit_every", &v])?.is_some() {
                    self.report.settings += 1;
                }
            }
            Step::Kill { node, down_s } => self.kill(node, down_s)?,
            Step::KillWriter { down_s } => {
                let writer = self.running.last().map(|(_, k)| self.puts[*k].node);
                let node = writer.or_else(|| self.running_from(1)).unwrap_or(1);
                self.kill(node, down_s)?;
            }
            Step::Backup { node } => {
                if !self.up[node] {
                    return Ok(());
                }
                self.net.kill(node)?;
                let copy = self.net.dir().join(format!("backup{node}"));
                // A second backup replaces the first: `cp -a HOME COPY` into a copy that is
                // there already nests the home inside it (and a restore then brought back a
                // full disk's ballast with it: the seed-2 hour run's harness error).
                if copy.exists() {
                    std::fs::remove_dir_all(&copy)
                        .with_context(|| format!("{}", copy.display()))?;
                }
                crate::proc::run(
                    Command::new("cp").arg("-a").arg(&self.net.nodes[node].home).arg(&copy),
                )?;
                // A full disk is a fault of its own, not part of the home.
                let _ = std::fs::remove_file(copy.join("chaos-ballast"));
                self.backups.insert(node, (copy, self.rms_acked));
                self.site_history.insert(node, self.sites.get(&node).cloned().unwrap_or_default());
                self.up[node] = false;
                self.start(node)?;
            }
            Step::Stale { node } => {
                let Some((copy, rms_then)) = self.backups.remove(&node) else { return Ok(()) };
                // What this node did after the copy was taken is undone here, and lost for good
                // unless a peer took it first (as with any restored backup): a removal it
                // acknowledged since may come back, and a site version it published since may
                // give way to any version published after the copy.
                for p in self.puts.iter_mut() {
                    if p.node == node && p.removed == Some(true) && p.removed_seq > rms_then {
                        p.removed = Some(false);
                    }
                }
                if let Some(since) = self.site_history.remove(&node)
                    && let Some(marks) = self.sites.get_mut(&node)
                {
                    for m in since {
                        if !marks.contains(&m) {
                            marks.push(m);
                        }
                    }
                }
                if self.up[node] {
                    self.net.kill(node)?;
                    self.up[node] = false;
                }
                let home = self.net.nodes[node].home.clone();
                // The home is a mount point: empty it and copy the old one in.
                crate::proc::run(Command::new("sh").arg("-c").arg(format!(
                    "find '{h}' -mindepth 1 -delete && cp -a '{c}/.' '{h}/'",
                    h = home.display(),
                    c = copy.display()
                )))?;
                std::fs::remove_dir_all(&copy).with_context(|| format!("{}", copy.display()))?;
                self.start(node)?;
            }
            Step::Partition { groups, for_s } => {
                let lan = self.net.lan().context("namespaces")?;
                for (g, members) in groups.iter().enumerate() {
                    let others: Vec<String> = groups
                        .iter()
                        .enumerate()
                        .filter(|(h, _)| *h != g)
                        .flat_map(|(_, m)| m.iter().map(|&n| lan.ip(n).to_string()))
                        .collect();
                    if others.is_empty() {
                        continue;
                    }
                    let set = others.join(", ");
                    for &n in members {
                        nft(
                            lan.ns(n),
                            &format!(
                                "table inet chaos_part {{\n chain i {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n chain o {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n}}\n"
                            ),
                        )?;
                    }
                }
                self.undo.push((Instant::now() + Duration::from_secs(for_s), step.clone()));
            }
            Step::Loss { node, percent, for_s } => {
                let lan = self.net.lan().context("namespaces")?;
                nft(
                    lan.ns(node),
                    &format!(
                        "table inet chaos_loss {{\n chain i {{ type filter hook input priority 0; iif lo accept; numgen random mod 100 lt {percent} drop; }}\n chain o {{ type filter hook output priority 0; oif lo accept; numgen random mod 100 lt {percent} drop; }}\n}}\n"
                    ),
                )?;
                self.undo.push((Instant::now() + Duration::from_secs(for_s), step.clone()));
            }
            Step::Delay { node, ms, jitter_ms, for_s } => {
                if self.delays.contains_key(&node) {
                    return Ok(());
                }
                let lan = self.net.lan().context("namespaces")?;
                let link = crate::delay::start(
                    lan.ns(node),
                    lan.ip(node),
                    Duration::from_millis(ms),
                    Duration::from_millis(jitter_ms),
                    self.cfg.seed ^ ms,
                )?;
                self.delays.insert(node, link);
                self.undo.push((Instant::now() + Duration::from_secs(for_s), step.clone()));
            }
            Step::Slow { node, mbit, for_s } => {
                let lan = self.net.lan().context("namespaces")?;
                let rate = format!("{mbit}mbit");
                in_ns(
                    lan.ns(node),
                    "tc",
                    &[
                        "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst",
                        "64kb", "latency", "300ms",
                    ],
                )?;
                self.undo.push((Instant::now() + Duration::from_secs(for_s), step.clone()));
            }
            Step::DiskFull { node, for_s } => {
                let home = &self.net.nodes[node].home;
                let ballast = home.join("chaos-ballast");
                // Written until the disk refuses, then a few KiB given back.
                crate::proc::run(Command::new("sh").arg("-c").arg(format!(
                    "dd if=/dev/zero of='{b}' bs=1M 2>/dev/null; truncate -s -64K '{b}'",
                    b = ballast.display()
                )))?;
                self.undo.push((Instant::now() + Duration::from_secs(for_s), step.clone()));
            }
            Step::Replace { node } => self.replace(node)?,
            Step::Garbage { for_s, seed } => {
                let lan = self.net.lan().context("namespaces")?;
                let spare = self.up.len() - 1;
                let ns = lan.ns(spare).to_string();
                let mut tickets = Vec::new();
                let mut http = Vec::new();
                for i in (0..self.up.len()).filter(|&i| self.up[i]) {
                    if let Ok(t) = self.net.kith_ok(i, &["id", "--ticket"]) {
                        tickets.push(t);
                        http.push(format!("{}:7780", lan.ip(i)).parse()?);
                    }
                }
                self.garbage.push(std::thread::spawn(move || {
                    crate::garbage::run(&ns, tickets, http, for_s, seed)
                }));
            }
            Step::Skew { node, ahead_s, for_s } => {
                let lib = Path::new(FAKETIME_LIB);
                if !lib.exists() {
                    bail!(
                        "{FAKETIME_LIB} is missing: install Debian's faketime (scripts/test does)"
                    );
                }
                let env = [
                    ("LD_PRELOAD", FAKETIME_LIB.to_string()),
                    ("FAKETIME", format!("{ahead_s:+}")),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
                    ("FAKETIME_DONT_RESET", "1".to_string()),
                ];
                self.net.nodes[node].up_env = env.map(|(k, v)| (k.to_string(), v)).to_vec();
                if self.up[node] {
                    self.net.kill(node)?;
                    self.up[node] = false;
                    self.start(node)?;
                }
                self.undo.push((Instant::now() + Duration::from_secs(for_s), step.clone()));
            }
        }
        Ok(())
    }

    /// Undoes a fault whose time is up.
    fn heal(&mut self, step: &Step) -> Result<()> {
        let lan = self.net.lan().context("namespaces")?;
        match step {
            Step::Partition { groups, .. } => {
                for &n in groups.iter().flatten() {
                    let _ = in_ns(lan.ns(n), "nft", &["delete", "table", "inet", "chaos_part"]);
                }
            }
            // Two faults of a kind on one node overlap: the first to end ends both (the table
            // or the qdisc is gone when the second ends).
            Step::Loss { node, .. } => {
                let _ = in_ns(lan.ns(*node), "nft", &["delete", "table", "inet", "chaos_loss"]);
            }
            Step::Slow { node, .. } => {
                let _ = in_ns(lan.ns(*node), "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            }
            Step::Delay { node, .. } => {
                if let Some(link) = self.delays.remove(node) {
                    let d = link.stop()?;
                    self.report.delayed_packets += d.packets;
                    self.report.reordered_packets += d.reordered;
                }
            }
            Step::Skew { node, .. } => {
                self.net.nodes[*node].up_env.clear();
                if self.up[*node] {
                    self.net.kill(*node)?;
                    self.up[*node] = false;
                    self.start(*node)?;
                }
            }
            Step::DiskFull { node, .. } => {
                // A restart from an old home may have taken it already.
                let ballast = self.net.nodes[*node].home.join("chaos-ballast");
                if ballast.exists() {
                    std::fs::remove_file(&ballast)
                        .with_context(|| format!("cannot remove {}", ballast.display()))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Node `node` leaves with a hand-off and stops for good; the spare node joins.
    fn replace(&mut self, node: usize) -> Result<()> {
        let spare = self.up.len() - 1;
        if self.up[node] {
            match self.bounded(node, &["pool", "leave", POOL, "--yes", "--wait", "90s"])? {
                Some(_) => {
                    self.net.stop(node)?;
                    self.up[node] = false;
                    self.gone[node] = true;
                    self.sites.remove(&node);
                }
                None => eprintln!("chaos: node {node} could not leave yet; it stays"),
            }
        }
        self.net.kith_ok(spare, &["init"])?;
        self.start(spare)?;
        // The founder invites; it may be down or cut off just now.
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            self.tick()?;
            let ticket =
                if self.up[0] { self.bounded(0, &["pool", "invite", POOL])? } else { None };
            if let Some(t) = ticket
                && self
                    .bounded(spare, &["pool", "join", t.trim(), "--as", &format!("node{spare}")])?
                    .is_some()
            {
                break;
            }
            if Instant::now() > deadline {
                self.violation(format!("node {spare} could not join in {STEP_LIMIT:?}"));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.offer(spare)
    }

    /// Runs a command on node `i` with a time limit; its stdout, or `None` if it failed (a
    /// node down or cut off is expected to make commands fail during the run).
    fn bounded(&mut self, i: usize, args: &[&str]) -> Result<Option<String>> {
        let mut child =
            self.net.cmd(i).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            if let Some(status) = child.try_wait()? {
                let mut out = String::new();
                child.stdout.take().context("stdout")?.read_to_string(&mut out)?;
                if !status.success() {
                    let mut err = String::new();
                    child.stderr.take().context("stderr")?.read_to_string(&mut err)?;
                    eprintln!("chaos: node {i}: kith {}: {}", args.join(" "), err.trim());
                    return Ok(None);
                }
                return Ok(Some(out));
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                eprintln!("chaos: node {i}: kith {} took over {STEP_LIMIT:?}", args.join(" "));
                return Ok(None);
            }
            // Keep the faults on time while a command waits.
            self.tick()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Takes in the puts that finished (all of them, waiting, with `all`).
    fn reap_puts(&mut self, all: bool) -> Result<()> {
        let mut still = Vec::new();
        for (mut child, k) in std::mem::take(&mut self.running) {
            let status = if all {
                wait_limited(&mut child, STEP_LIMIT)?
            } else {
                match child.try_wait()? {
                    Some(s) => Some(s),
                    None => {
                        still.push((child, k));
                        continue;
                    }
                }
            };
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                o.read_to_string(&mut out)?;
            }
            match status {
                Some(s) if s.success() => {
                    let v: Value = serde_json::from_str(&out)
                        .with_context(|| format!("put printed no JSON: {out}"))?;
                    self.puts[k].id = v["id"].as_str().map(str::to_string);
                    self.report.puts_acknowledged += 1;
                }
                _ => {}
            }
        }
        self.running = still;
        Ok(())
    }

    /// Reads put `k` back on its owner's node: `Some(same bytes?)`, or `None` if it failed.
    /// Whether put `k` was acknowledged and not taken out since: it must read back.
    fn readable(&self, k: usize) -> bool {
        self.puts[k].id.is_some() && self.puts[k].removed.is_none()
    }

    fn read_back(&mut self, k: usize) -> Result<Option<bool>> {
        let p = self.puts[k].clone();
        let id = p.id.context("acknowledged")?;
        let back = self.net.dir().join(format!("back{k}.bin"));
        let _ = std::fs::remove_file(&back);
        let got = self.bounded(p.node, &["get", &id, "-o", &back.to_string_lossy()])?;
        if got.is_none() {
            return Ok(None);
        }
        let same = std::fs::read(&back).with_context(|| format!("{} after get", back.display()))?
            == std::fs::read(&p.file)?;
        std::fs::remove_file(&back)?;
        Ok(Some(same))
    }

    /// Faults stopped: every fault undone, every node that should run up again.
    fn calm(&mut self) -> Result<()> {
        for (_, step) in std::mem::take(&mut self.undo) {
            self.heal(&step)?;
        }
        for (_, i) in std::mem::take(&mut self.restarts) {
            self.start(i)?;
        }
        for g in std::mem::take(&mut self.garbage) {
            let sent = g.join().map_err(|_| anyhow::anyhow!("the garbage peer panicked"))??;
            eprintln!("chaos: the garbage peer sent {}", serde_json::to_string(&sent)?);
            self.report.garbage_streams += sent.streams;
        }
        self.reap_puts(true)?;
        Ok(())
    }

    /// The nodes in the pool at the end.
    fn members(&self) -> Vec<usize> {
        (0..self.up.len()).filter(|&i| self.up[i] && !self.gone[i]).collect()
    }

    /// Waits until the nodes agree and nothing is under-replicated, then checks every put,
    /// site and store.
    fn check(&mut self) -> Result<()> {
        let t = Instant::now();
        let members = self.members();
        let mut last = String::new();
        let agreed = loop {
            self.tick()?;
            match self.agreement(&members) {
                Ok(None) => break true,
                Ok(Some(why)) => last = why,
                Err(e) => last = format!("{e:#}"),
            }
            if t.elapsed() > SETTLE_LIMIT {
                break false;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        self.report.converged_after_s = crate::figures::round(t.elapsed().as_secs_f64(), 1);
        if !agreed {
            self.violation(format!("not converged after {SETTLE_LIMIT:?}: {last}"));
        }
        // The ledger matches its evidence on every node.
        for &i in &members {
            let verify = self.net.kith(i, &["ledger", "verify", "--pool", POOL]);
            if !verify.status.success() {
                self.violation(format!(
                    "node {i}: ledger verify fails: {}{}",
                    String::from_utf8_lossy(&verify.stdout).trim(),
                    String::from_utf8_lossy(&verify.stderr).trim()
                ));
            }
        }
        eprintln!("chaos: converged after {:.1} s", self.report.converged_after_s);
        // Every site's latest version, from every node.
        let lan = self.net.lan().context("namespaces")?;
        let at: Vec<(usize, String, SocketAddr)> = members
            .iter()
            .map(|&i| Ok((i, lan.ns(i).to_string(), format!("{}:7780", lan.ip(i)).parse()?)))
            .collect::<Result<_>>()?;
        // A node may still be fetching a version's files from their holders: all of them are
        // polled together until one deadline.
        let mut pending: Vec<(usize, Vec<String>, usize, String, SocketAddr, String)> = Vec::new();
        for (&owner, marks) in &self.sites {
            for (i, ns, addr) in &at {
                pending.push((owner, marks.clone(), *i, ns.clone(), *addr, String::new()));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut still = Vec::new();
            for (owner, marks, i, ns, addr, _) in pending {
                let path = format!("/s/site{owner}/");
                let body = crate::netns::on_ns_thread(&ns, move || http_body(addr, &path))?;
                let fault = match body {
                    Ok(b) if marks.iter().any(|m| b.contains(&format!("{m}<"))) => continue,
                    Ok(b) => format!(
                        "serves site{owner} without `{}` (nor a later publish left unanswered): {}",
                        marks[0],
                        b.chars().take(200).collect::<String>()
                    ),
                    Err(e) => format!("cannot serve site{owner}: {e:#}"),
                };
                still.push((owner, marks, i, ns, addr, fault));
            }
            pending = still;
            if pending.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for (_, _, i, _, _, fault) in pending {
            self.violation(format!("node {i} {fault}"));
        }
        // Every acknowledged put, from the pool: the owner forgets its local copy, collects
        // the garbage, and reads it back. A put of a node that left came home to it.
        let acked: Vec<usize> = (0..self.puts.len()).filter(|&k| self.readable(k)).collect();
        for &k in &acked {
            let (node, id) = (self.puts[k].node, self.puts[k].id.clone().context("id")?);
            if !self.gone[node] {
                // A node restarted from an old home may not know an object it put later; the
                // read below still fetches it from the pool.
                let _ = self.net.kith(node, &["rm", "--local", &id]);
            }
        }
        for &i in &members {
            self.net.kith_ok(i, &["gc"])?;
        }
        for &k in &acked {
            let ok = match self.read_back(k)? {
                Some(true) => continue,
                Some(false) => "read back different bytes",
                None => "cannot be read back",
            };
            let p = &self.puts[k];
            let what = format!(
                "object {} ({} bytes, put on node {}) {ok}",
                p.id.as_deref().unwrap_or("?"),
                p.bytes,
                p.node
            );
            self.report.bytes_lost += p.bytes;
            self.violation(what);
        }
        // A removal that was acknowledged holds: no node lists the object again.
        for &i in &members {
            let v = self.net.json(i, &["pool", "show", POOL])?;
            let listed: Vec<&str> = v["objects"]
                .as_array()
                .map(|a| a.iter().filter_map(|o| o["id"].as_str()).collect())
                .unwrap_or_default();
            let still: Vec<String> = self
                .puts
                .iter()
                .filter(|p| p.removed == Some(true))
                .filter_map(|p| p.id.clone())
                .filter(|id| listed.iter().any(|l| l.starts_with(id.as_str()) || id.starts_with(l)))
                .collect();
            for id in still {
                self.violation(format!(
                    "node {i} still lists object {id}, whose rm was acknowledged"
                ));
            }
        }
        // Every store sound.
        for i in 0..self.up.len() {
            if !self.up[i] && !self.gone[i] {
                continue;
            }
            if self.net.kith(i, &["verify"]).status.success() {
                continue;
            }
            let out = self.net.kith(i, &["verify"]);
            self.violation(format!(
                "kith verify fails on node {i}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.report.violations = self.report.violation_list.len();
        Ok(())
    }

    /// The index ids of every site version node `i` knows (each is a pool object).
    fn site_indexes(&self, i: usize) -> Vec<String> {
        (0..self.up.len())
            .filter_map(|k| self.net.json(i, &["site", "versions", &format!("site{k}")]).ok())
            .flat_map(|v| {
                v["versions"]
                    .as_array()
                    .map(|a| {
                        a.iter().filter_map(|x| x["index"].as_str().map(str::to_string)).collect()
                    })
                    .unwrap_or_else(Vec::new)
            })
            .collect()
    }

    /// `None` when every member has the same pool heads and ledger statement, the ledger
    /// verifies and nothing is under-replicated; else what differs.
    fn agreement(&mut self, members: &[usize]) -> Result<Option<String>> {
        let mut heads = BTreeMap::new();
        let mut statements = BTreeMap::new();
        for &i in members {
            let v = self.net.json(i, &["pool", "show", POOL])?;
            let r = &v["replication"];
            // Nothing under-replicated, and every object's manifest readable (an object whose
            // manifest no node holds counts no blob; its owner's node takes it out).
            let unreadable = r["unreadable"].as_array().map_or(0, |a| a.len());
            // Blobs no node holds (every node answered) of objects no put acknowledged cannot
            // come back: named, not waited for. An acknowledged put's is a violation below
            // (it does not read back), so it is never excused here.
            let lost: Vec<String> = r["lost_objects"]
                .as_array()
                .map(|a| a.iter().filter_map(|o| o.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            // Site versions are pool objects too (their index), acknowledged or not: never
            // excused either.
            let sites = if lost.is_empty() { Vec::new() } else { self.site_indexes(i) };
            let acked = |o: &String| {
                self.puts.iter().any(|p| p.id.as_ref().is_some_and(|id| id.starts_with(o.as_str())))
                    || sites.iter().any(|x| x.starts_with(o.as_str()))
            };
            let only_unacked = !lost.is_empty()
                && r["under_replicated_blobs"] == r["lost_blobs"]
                && r["unconfirmed_blobs"] == 0
                && unreadable == 0
                && !r["error"].is_string()
                && !lost.iter().any(acked);
            if only_unacked {
                for o in lost {
                    if !self.report.lost_unacknowledged.contains(&o) {
                        self.report.lost_unacknowledged.push(o);
                    }
                }
            } else if r["under_replicated_bytes"] != 0 || unreadable > 0 || r["error"].is_string() {
                return Ok(Some(format!(
                    "node {i}: under-replicated {} bytes in {} blobs ({} in no node's store, {} unconfirmed), {unreadable} manifests unreadable{}",
                    r["under_replicated_bytes"],
                    r["under_replicated_blobs"],
                    r["lost_blobs"],
                    r["unconfirmed_blobs"],
                    r["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
            heads.insert(i, v["heads"].clone());
            let s = self
                .net
                .kith_ok(i, &["ledger", "statement", "--pool", POOL, "--format", "json"])?;
            statements.insert(i, s);
        }
        let first = members[0];
        for &i in members {
            if heads[&i] != heads[&first] {
                return Ok(Some(format!("node {i} and node {first} hold different pool heads")));
            }
            if statements[&i] != statements[&first] {
                return Ok(Some(format!("node {i} and node {first} show different ledgers")));
            }
        }
        Ok(None)
    }
}

/// Loads an nftables ruleset into namespace `ns`.
fn nft(ns: &str, rules: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (install nftables)")?;
    child.stdin.take().context("stdin")?.write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {ns}: {}\n{rules}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn wait_limited(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process's resident memory (MiB).
fn rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb >> 10)
}

/// The body of `GET path` at `addr`.
fn http_body(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        bail!("status {status}");
    }
    Ok(text)
}

/// Each home on a tmpfs of its own, so that one can be filled; unmounted on drop.
struct Disks(Vec<PathBuf>);

impl Disks {
    fn mount(net: &Testnet, n: usize) -> Result<Disks> {
        let mut d = Disks(Vec::new());
        for i in 0..n {
            let home = &net.nodes[i].home;
            std::fs::create_dir_all(home)?;
            crate::proc::run(
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={DISK_MB}m,mode=0700"), "chaos"])
                    .arg(home),
            )
            .context("cannot mount a tmpfs (run as root)")?;
            d.0.push(home.clone());
        }
        Ok(d)
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for h in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(h).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &[Timed]) -> String {
        serde_json::to_string(s).unwrap_or_default()
    }

    #[test]
    fn a_seed_gives_one_schedule_with_every_kind_of_fault() {
        let a = schedule(7, 180, 1);
        assert_eq!(text(&a), text(&schedule(7, 180, 1)));
        assert_ne!(text(&a), text(&schedule(7, 180, 2)));
        let kinds: std::collections::BTreeSet<_> =
            a.iter().filter_map(|s| s.step.fault()).collect();
        for k in [
            "kill",
            "kill_mid_put",
            "kill_and_copy_home",
            "restart_from_old_home",
            "partition",
            "loss",
            "slow_link",
            "disk_full",
            "leave_and_join",
            "clock_skew",
            "garbage_peer",
            "delay_and_reorder",
        ] {
            assert!(kinds.contains(k), "{k} missing from {kinds:?}");
        }
        assert!(a.windows(2).all(|w| w[0].at_s <= w[1].at_s));
        assert!(a.iter().all(|s| s.at_s < 180.0));
    }

    /// Finding 12: seed 1's hour restarted nodes 1, 3 and 5 from old homes at one moment,
    /// 21 s after a put those three held (all copies rolled back together), and the run
    /// called it a loss.
    #[test]
    fn regression_restarts_from_old_homes_never_roll_back_several_holders_at_once() {
        for (seconds, seed) in [(3600, 1), (3600, 2), (3600, 3), (1200, 2), (180, 1)] {
            let s = schedule(7, seconds, seed);
            let stale: Vec<f64> =
                s.iter().filter(|t| matches!(t.step, Step::Stale { .. })).map(|t| t.at_s).collect();
            assert!(
                stale.windows(2).all(|w| w[1] - w[0] >= STALE_GAP_S - 0.1),
                "seed {seed}, {seconds} s: restarts from old homes at {stale:?}"
            );
            assert!(s.iter().all(|t| t.at_s < seconds as f64));
            if seconds == 3600 {
                assert!(stale.len() >= 10, "seed {seed}: only {} stale restarts", stale.len());
            }
        }
        // Seed 1's hour had four at 2885.0 s.
        let before = schedule(7, 3600, 1)
            .iter()
            .filter(|t| matches!(t.step, Step::Stale { .. }) && (t.at_s - 2885.0).abs() < 1.0)
            .count();
        assert!(before <= 1);
    }
}
