//! `testnet up`: a LAN of real nodes in network namespaces, for a person to try kith on by
//! hand, until Ctrl-C.
//!
//! Every node gets a home, `kith init` and a running `kith up`; with a pool, node 0 founds it,
//! the others join with one ticket and every node offers storage in a zone of its own, so a
//! pooled put works at once. What a person needs to reach each node is printed, then a line
//! starting with `ready:`. The first SIGINT or SIGTERM stops the nodes; dropping the
//! [`Testnet`] (also when unwinding from a panic) removes the namespaces and the homes.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::net::{Layout, Testnet};
use crate::proc::have;

/// Most nodes one LAN takes (its addresses are `10.99.0.1` to `10.99.0.N`).
pub const MAX_NODES: usize = 200;
/// How long the nodes get to find each other, and the pool to reach every node.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the nodes get to stop before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Storage each node offers to the pool (GiB).
const OFFER_GIB: u64 = 1;
/// Copies of a pooled object (fewer on a smaller LAN).
const REPLICAS: usize = 3;
/// Why setup failed when a signal came.
const INTERRUPTED: &str = "interrupted before the LAN was ready";

/// Runs `testnet up`: `n` nodes running the binary `kith`, optionally in a pool named `pool`,
/// until SIGINT or SIGTERM; `keep` keeps the homes.
pub fn run(kith: &Path, n: usize, pool: Option<&str>, keep: bool) -> Result<()> {
    let kith = preflight(kith, n)?;
    let stop = on_signal()?;
    let mut net = Testnet::new(&kith, n, Layout::Namespaces)?;
    if keep {
        net.keep_dir();
    }
    let ready = start(&mut net, pool, &stop).and_then(|()| print_nodes(&net, &kith, pool, keep));
    let ready = match ready {
        Ok(()) => {
            let _ = stop.recv();
            Ok(())
        }
        // Ctrl-C in a terminal reaches the nodes too: one may have stopped before we heard it.
        Err(e) if stop.try_recv().is_ok() => Err(e.context(INTERRUPTED)),
        Err(e) => Err(e),
    };
    eprintln!("stopping {n} nodes");
    let stopped = net.stop_all(STOP_TIMEOUT);
    let dir = net.dir().to_path_buf();
    drop(net);
    if keep {
        println!("stopped; the homes and logs are in {}", dir.display());
    } else {
        println!("stopped; removed the namespaces and {}", dir.display());
    }
    ready.and(stopped)
}

/// Fails early, saying what to do, when the LAN cannot be made; returns `kith` made absolute.
fn preflight(kith: &Path, n: usize) -> Result<PathBuf> {
    if !(1..=MAX_NODES).contains(&n) {
        bail!("a LAN has 1 to {MAX_NODES} nodes, not {n}");
    }
    let kith = std::path::absolute(kith)?;
    if !kith.is_file() {
        bail!(
            "no kith binary at {}: build it (cargo build -p kith) or pass --kith PATH",
            kith.display()
        );
    }
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!("testnet up makes network namespaces, which needs root: run it with sudo");
    }
    for (program, package) in [("ip", "iproute2"), ("setsid", "util-linux")] {
        if !have(program) {
            bail!("testnet up needs `{program}`: install {package}");
        }
    }
    Ok(kith)
}

/// A receiver that gets a message at the first SIGINT or SIGTERM. The handlers stay for the
/// life of the process, so a second Ctrl-C cannot cut the teardown short.
fn on_signal() -> Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .context("cannot watch SIGINT and SIGTERM")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(rx)
}

/// Starts every node, waits until they see each other, and makes the pool.
fn start(net: &mut Testnet, pool: Option<&str>, stop: &mpsc::Receiver<()>) -> Result<()> {
    let n = net.nodes.len();
    for i in 0..n {
        interrupted(stop)?;
        net.kith_ok(i, &["init"])?;
        net.start(i)?;
        eprintln!("node {i} is up");
    }
    net.wait_for(READY_TIMEOUT, "the nodes to find each other (mDNS)", |net| {
        interrupted(stop)?;
        Ok((0..n).all(|i| {
            net.peers(i)
                .is_ok_and(|ps| ps.iter().filter(|p| p["state"] == "reachable").count() == n - 1)
        }))
    })?;
    match pool {
        Some(name) => make_pool(net, name, stop),
        None => Ok(()),
    }
}

/// Node 0 founds pool `name`, the others join with one ticket, every node offers storage.
fn make_pool(net: &mut Testnet, name: &str, stop: &mpsc::Receiver<()>) -> Result<()> {
    let n = net.nodes.len();
    let replicas = REPLICAS.min(n).to_string();
    net.kith_ok(0, &["pool", "create", name, "--replicas", &replicas, "--as", "node0"])?;
    if n > 1 {
        let uses = (n - 1).to_string();
        let ticket = net.kith_ok(0, &["pool", "invite", name, "--uses", &uses])?;
        for i in 1..n {
            net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", &format!("node{i}")])?;
        }
    }
    let storage = format!("{OFFER_GIB}GiB");
    for i in 0..n {
        net.kith_ok(i, &["offer", name, "--storage", &storage, "--zone", &format!("node{i}")])?;
    }
    let want = n as u64 * (OFFER_GIB << 30);
    net.wait_for(READY_TIMEOUT, "every node to see the whole pool", |net| {
        interrupted(stop)?;
        Ok((0..n).all(|i| {
            net.json(i, &["pool", "show", name]).is_ok_and(|v| {
                v["capacity"]["offered"] == want
                    && v["members"].as_array().is_some_and(|m| m.len() == n)
            })
        }))
    })?;
    eprintln!("pool {name}: {n} members");
    Ok(())
}

/// Fails if SIGINT or SIGTERM came.
fn interrupted(stop: &mpsc::Receiver<()>) -> Result<()> {
    if stop.try_recv().is_ok() {
        bail!(INTERRUPTED);
    }
    Ok(())
}

/// Prints how to reach every node, then the `ready:` line.
fn print_nodes(net: &Testnet, kith: &Path, pool: Option<&str>, keep: bool) -> Result<()> {
    let lan = net.lan().context("a namespace testnet has a LAN")?;
    let kith = quote(&kith.display().to_string());
    let command = |i: usize| {
        let home = quote(&net.nodes[i].home.display().to_string());
        format!("ip netns exec {} {kith} --home {home}", lan.ns(i))
    };
    for i in 0..net.nodes.len() {
        let status = net.json(i, &["status"])?;
        println!("node {i}");
        println!("  namespace  {}", lan.ns(i));
        println!("  ip         {}", lan.ip(i));
        println!("  node id    {}", status["node"].as_str().unwrap_or("?"));
        println!("  home       {}", net.nodes[i].home.display());
        println!("  log        {}", net.nodes[i].log.display());
        let http = status["http"].as_str().and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        if let Some(http) = http {
            println!("  gateway    http://{}:{}/", lan.ip(i), http.port());
        }
        println!("  command    {} status", command(i));
    }
    if let Some(name) = pool {
        println!("pool {name}: node 0 founded it, the others joined, each offers {OFFER_GIB}GiB");
        println!("  try        {} put FILE --pool {}", command(0), quote(name));
    }
    println!("Run these commands as root, from any terminal, with any kith command for `status`;");
    println!("`ip netns exec NAMESPACE bash` opens a shell on the LAN (to curl a gateway).");
    let homes = if keep { "(the homes stay)" } else { "and the homes" };
    println!(
        "ready: {} node(s) up; Ctrl-C stops them, removes the namespaces {homes}.",
        net.nodes.len()
    );
    Ok(())
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b);
    if !s.is_empty() && s.bytes().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
