//! `testnet`: benchmarks and scenarios with real kith processes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kith_testnet::bench::StoreBench;

#[derive(Parser)]
#[command(name = "testnet", about = "Real kith nodes on one machine: benchmarks and scenarios.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::enum_variant_names)] // the commands are benchmarks
enum Cmd {
    /// kith put/get against restic backup/restore on the reference dataset.
    StoreBench {
        /// Dataset folder made by make-dataset.sh (v1/, v2/, *.sha256).
        #[arg(long, default_value = "bench-data")]
        data: PathBuf,
        /// Scratch folder (work copies, stores, restores).
        #[arg(long, default_value = "bench-scratch")]
        scratch: PathBuf,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
        /// Rounds; figures are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Run in the scratch folder itself, not on a fresh ext4 per round (which needs root).
        #[arg(long)]
        in_place: bool,
    },
    /// A kith object between two nodes against a raw iroh stream; discovery time.
    TransferBench {
        /// Object size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Rounds; figures are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Discovery rounds (3 nodes in network namespaces; needs root).
        #[arg(long, default_value_t = 5)]
        discovery_runs: usize,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// A year of a pool's ledger, simulated on the ledger core: document and sync sizes.
    LedgerSim {
        /// Members.
        #[arg(long, default_value_t = 50)]
        members: usize,
        /// Months.
        #[arg(long, default_value_t = 12)]
        months: usize,
    },
    /// Browsers: headless Chromium downloads over the node's WebRTC channel, against iroh.
    BrowserBench {
        /// File size in MiB.
        #[arg(long, default_value_t = 20)]
        mib: u64,
        /// Rounds; figures are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// Node to node through two NATs: a WebRTC link signalled by a neighbour, against iroh.
    MeshBench {
        /// Object size in MiB.
        #[arg(long, default_value_t = 32)]
        mib: u64,
        /// Rounds; figures are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// Sites: the kith gateway against nginx on the same folder (wrk), and a cold request.
    SiteBench {
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Connections.
        #[arg(long, default_value_t = 32)]
        conns: usize,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// Pools: put into a pool of 5 against a local put, the writer lost and its identity
    /// restored, repair after a holder's loss, document convergence over many nodes.
    PoolBench {
        /// Object size in MiB.
        #[arg(long, default_value_t = 200)]
        mib: u64,
        /// Nodes in the convergence run (0: skip it).
        #[arg(long, default_value_t = 10)]
        converge_nodes: usize,
        /// Instead of the scenario on loopback: only the put, on five nodes in network
        /// namespaces whose links are shaped to this many Mbit/s each way (needs root).
        #[arg(long)]
        link_mbit: Option<u32>,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// Compute: a CPU-bound job natively, in wasmtime alone, through `kith job run` on one
    /// node and on a pool of four with redundancy 2; a tiny job's time to its first result.
    ComputeBench {
        /// About how long the job takes in wasmtime (s).
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// The federation at scale with the real document, message and placement code (no
    /// network): document sizes, control traffic per day, repair after losing a pool.
    FedSim {
        /// Pools (even).
        #[arg(long, default_value_t = 100)]
        pools: usize,
        /// Members per pool.
        #[arg(long, default_value_t = 50)]
        members: usize,
        /// GiB each member keeps off-site.
        #[arg(long, default_value_t = 2)]
        gib_per_member: u64,
        /// CDN edge nodes per pool.
        #[arg(long, default_value_t = 2)]
        edges: usize,
        /// Blobs sampled per pool for placement.
        #[arg(long, default_value_t = 4000)]
        blobs: usize,
    },
    /// Federation: two neighbourhoods on two LANs over a 20 Mbit/s link with 0.5% loss; one
    /// pool keeps an off-site copy at the other, loses its LAN and restores from there.
    FederationBench {
        /// Object size in MiB.
        #[arg(long, default_value_t = 100)]
        mib: u64,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// Relays: two neighbourhoods with no path between them but a member's node serving a
    /// relay; `kith get` through it against a raw iroh stream through it.
    RelayBench {
        /// Object size in MiB.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Rounds of each.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// Moving: `kith move` of an object between two pools of 3 nodes, against a plain
    /// `put --pool` of as much fresh data into the destination.
    MoveBench {
        /// Object size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// Checks a benchmark's output (its last line, JSON) against the reference figures in
    /// docs/benchmarks.md; fails if a figure regressed by more than the tolerance or is missing.
    Compare {
        /// The benchmark's output [default: standard input].
        #[arg(long)]
        output: Option<PathBuf>,
        /// The Markdown file holding the reference block.
        #[arg(long, default_value = "docs/benchmarks.md")]
        reference: PathBuf,
        /// How far a figure may move the wrong way (0.3: 30%).
        #[arg(long, default_value_t = kith_testnet::figures::TOLERANCE)]
        tolerance: f64,
    },
    /// A pool of real daemons in network namespaces under a workload and seeded faults (kill -9,
    /// restarts from old homes, partitions, loss, slow links, full disks, a member replaced);
    /// then checks that nothing acknowledged was lost and every node agrees (needs root).
    ///
    /// Ends with one line of JSON; exits 1 if anything was violated.
    Chaos {
        /// Pool nodes (one more joins during the run).
        #[arg(long, default_value_t = 7)]
        nodes: usize,
        /// Minutes of workload and faults.
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
        /// The seed of the schedule.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the schedule and stop.
        #[arg(long)]
        dry_run: bool,
        /// Keep the logs afterwards (kept anyway when something was violated).
        #[arg(long)]
        keep: bool,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
    /// An N-node LAN in network namespaces to try kith on by hand, until Ctrl-C (needs root).
    ///
    /// Prints how to reach every node (namespace, address, home, node id, a command line).
    /// Ctrl-C stops the nodes and removes the namespaces and homes.
    Up {
        /// Nodes.
        nodes: usize,
        /// Found a pool of this name on node 0, join every other node to it, offer storage.
        #[arg(long, value_name = "NAME")]
        pool: Option<String>,
        /// Keep the homes and logs (their folder is printed).
        #[arg(long)]
        keep: bool,
        /// The kith binary [default: next to this one].
        #[arg(long)]
        kith: Option<PathBuf>,
    },
}

fn sibling_kith(kith: Option<PathBuf>) -> Result<PathBuf> {
    match kith {
        Some(k) => Ok(k),
        None => Ok(std::env::current_exe()?.parent().context("no parent")?.join("kith")),
    }
}

/// Prints a benchmark's figures as the last line of its output (see `kith_testnet::figures`).
fn json_line<T: serde::Serialize>(figures: &T) -> Result<()> {
    println!("{}", kith_testnet::figures::line(figures)?);
    Ok(())
}

/// `testnet compare`: prints every reference figure against this run's, fails on a regression.
fn compare(output: Option<PathBuf>, reference: &std::path::Path, tolerance: f64) -> Result<()> {
    use kith_testnet::figures::{self, Verdict};
    let text = match output {
        Some(p) => {
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?,
    };
    let run = figures::last_line(&text)?;
    let markdown = std::fs::read_to_string(reference)
        .with_context(|| format!("cannot read {}", reference.display()))?;
    let reference =
        figures::reference(&markdown).with_context(|| format!("in {}", reference.display()))?;
    let checks = figures::compare(&reference, &run, tolerance)?;
    println!("{}", figures::header());
    for c in &checks {
        println!("{c}");
    }
    let bad: Vec<_> = checks.iter().filter(|c| c.verdict != Verdict::Ok).collect();
    if !bad.is_empty() {
        anyhow::bail!(
            "{} of {} figures of \"{}\" regressed by more than {:.0}% or are missing",
            bad.len(),
            checks.len(),
            run.bench,
            tolerance * 100.0
        );
    }
    println!(
        "{}: {} figures within {:.0}% of the reference",
        run.bench,
        checks.len(),
        tolerance * 100.0
    );
    Ok(())
}

fn main() -> Result<()> {
    // The benchmarks' own endpoints (raw iroh) log with KITH_TESTNET_TRACE=filter.
    if let Ok(f) = std::env::var("KITH_TESTNET_TRACE") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .try_init();
    }
    match Cli::parse().command {
        Cmd::TransferBench { mib, runs, discovery_runs, kith } => {
            let report =
                kith_testnet::transfer::run(&sibling_kith(kith)?, mib, runs, discovery_runs)?;
            println!("{}", report.markdown());
            json_line(&report.figures())?;
        }
        Cmd::BrowserBench { mib, runs, kith } => {
            let report = kith_testnet::browser::run(&sibling_kith(kith)?, mib, runs)?;
            println!("{}", report.markdown());
            json_line(&report.figures())?;
        }
        Cmd::MeshBench { mib, runs, kith } => {
            let report = kith_testnet::mesh::run(&sibling_kith(kith)?, mib, runs)?;
            println!("{}", report.markdown());
            json_line(&report.figures())?;
        }
        Cmd::SiteBench { secs, conns, kith } => {
            let report = kith_testnet::site::run(&sibling_kith(kith)?, secs, conns)?;
            println!("{}", report.markdown());
            json_line(&report.figures())?;
        }
        Cmd::LedgerSim { members, months } => {
            let m = kith_testnet::ledger_sim::run(members, months)?;
            println!("{}", kith_testnet::ledger_sim::markdown(members, &m));
            json_line(&kith_testnet::ledger_sim::figures(members, &m))?;
        }
        Cmd::PoolBench { mib, link_mbit: Some(mbit), kith, .. } => {
            let f = kith_testnet::pool::linked(&sibling_kith(kith)?, mib, mbit)?;
            println!("{}", f.markdown());
            json_line(&f)?;
        }
        Cmd::PoolBench { mib, converge_nodes, link_mbit: None, kith } => {
            let report = kith_testnet::pool::scenario(&sibling_kith(kith)?, mib, converge_nodes)?;
            println!("{}", report.markdown());
            json_line(&report.figures())?;
            if !report.identical {
                anyhow::bail!("the restored object differs from what was put");
            }
        }
        Cmd::ComputeBench { seconds, kith } => {
            let f = kith_testnet::compute_bench::run(&sibling_kith(kith)?, seconds)?;
            println!("{}", f.markdown());
            json_line(&f)?;
        }
        Cmd::FedSim { pools, members, gib_per_member, edges, blobs } => {
            let f = kith_testnet::fed_sim::run(pools, members, gib_per_member, edges, blobs)?;
            println!("{}", kith_testnet::fed_sim::markdown(&f));
            json_line(&f)?;
        }
        Cmd::RelayBench { mib, rounds, kith } => {
            let f = kith_testnet::relay_bench::run(&sibling_kith(kith)?, mib, rounds)?;
            println!("{}", kith_testnet::relay_bench::markdown(&f));
            json_line(&f)?;
        }
        Cmd::FederationBench { mib, kith } => {
            let f = kith_testnet::federation_bench::run(&sibling_kith(kith)?, mib)?;
            println!("{}", kith_testnet::federation_bench::markdown(&f));
            json_line(&f)?;
            if !f.identical {
                anyhow::bail!("the restored object differs from what was put");
            }
        }
        Cmd::MoveBench { mib, kith } => {
            let f = kith_testnet::moving::run(&sibling_kith(kith)?, mib)?;
            println!("{}", kith_testnet::moving::markdown(&f));
            json_line(&f)?;
        }
        Cmd::Compare { output, reference, tolerance } => compare(output, &reference, tolerance)?,
        Cmd::Chaos { nodes, minutes, seed, dry_run, keep, kith } => {
            let seconds = (minutes * 60.0).round() as u64;
            if dry_run {
                for s in kith_testnet::chaos::schedule(nodes, seconds, seed) {
                    println!("{}", serde_json::to_string(&s)?);
                }
                return Ok(());
            }
            let cfg = kith_testnet::chaos::ChaosConfig { nodes, seconds, seed, keep };
            let report = kith_testnet::chaos::run(&std::path::absolute(sibling_kith(kith)?)?, cfg)?;
            json_line(&report)?;
            if report.violations > 0 {
                anyhow::bail!("seed {seed}: {} violation(s)", report.violations);
            }
        }
        Cmd::Up { nodes, pool, keep, kith } => {
            kith_testnet::up::run(&sibling_kith(kith)?, nodes, pool.as_deref(), keep)?;
        }
        Cmd::StoreBench { data, scratch, kith, runs, in_place } => {
            let kith = sibling_kith(kith)?;
            let bench = StoreBench {
                data: std::path::absolute(data)?,
                kith,
                scratch: std::path::absolute(scratch)?,
                runs,
                in_place,
            };
            let report = bench.run()?;
            println!("{}", report.markdown());
            json_line(&report.figures())?;
        }
    }
    Ok(())
}
