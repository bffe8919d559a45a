//! A testnet: N real `kith up` processes on one machine, on loopback or in namespaces.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::Lan;

/// How long a node gets to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// All on 127.0.0.1 with OS-chosen ports and no mDNS (tests running at once on one
    /// machine would otherwise see each other's nodes); nodes are joined by tickets.
    Loopback,
    /// One network namespace per node, joined by a bridge (real multicast); default ports.
    Namespaces,
}

/// One node of a testnet.
#[derive(Debug)]
pub struct TestNode {
    /// Its home.
    pub home: PathBuf,
    /// Its log (stderr of `kith up`).
    pub log: PathBuf,
    /// Extra arguments for `kith up`.
    pub up_args: Vec<String>,
    /// Extra environment for `kith up` (a skewed clock: see `chaos`).
    pub up_env: Vec<(String, String)>,
    child: Option<Child>,
    started: Option<Instant>,
}

/// Nodes and their network; everything is removed on drop.
#[derive(Debug)]
pub struct Testnet {
    kith: PathBuf,
    layout: Layout,
    dir: tempfile::TempDir,
    /// The nodes.
    pub nodes: Vec<TestNode>,
    /// On loopback, whether a node that starts is given the tickets of the running nodes
    /// (and they its ticket).
    pub auto_connect: bool,
    lan: Option<Lan>,
}

impl Testnet {
    /// A testnet of `n` nodes (not started) running the binary `kith`.
    pub fn new(kith: &Path, n: usize, layout: Layout) -> Result<Testnet> {
        let dir = tempfile::Builder::new().prefix("testnet").tempdir()?;
        let lan = match layout {
            Layout::Namespaces => Some(Lan::new(n)?),
            Layout::Loopback => None,
        };
        let nodes = (0..n)
            .map(|i| TestNode {
                home: dir.path().join(format!("node{i}")),
                log: dir.path().join(format!("node{i}.log")),
                up_args: Vec::new(),
                up_env: Vec::new(),
                child: None,
                started: None,
            })
            .collect();
        Ok(Testnet { kith: kith.to_path_buf(), layout, dir, nodes, auto_connect: true, lan })
    }

    /// A scratch folder for the test.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the scratch folder (the homes and logs) when the testnet is dropped.
    pub fn keep_dir(&mut self) {
        self.dir.disable_cleanup(true);
    }

    /// The LAN, for namespace testnets.
    pub fn lan(&self) -> Option<&Lan> {
        self.lan.as_ref()
    }

    /// Puts node `i` behind a NAT router of its own (see [`Lan::put_behind_nat`]); namespace
    /// testnets only, before the node starts.
    pub fn put_behind_nat(&mut self, i: usize) -> Result<()> {
        match self.lan.as_mut() {
            Some(lan) => lan.put_behind_nat(i),
            None => bail!("NAT needs a namespace testnet"),
        }
    }

    /// Splits the LAN in two neighbourhoods joined by a shaped router (see [`Lan::split`]);
    /// namespace testnets only, before the nodes start.
    pub fn split_lan(&mut self, from: usize, shape: crate::netns::LinkShape) -> Result<()> {
        match self.lan.as_mut() {
            Some(lan) => lan.split(from, shape),
            None => bail!("two neighbourhoods need a namespace testnet"),
        }
    }

    /// Gives node `i` an uplink both neighbourhoods reach (see [`Lan::add_uplink`]) and
    /// returns its address; after [`Testnet::split_lan`], before the nodes start.
    pub fn add_uplink(&mut self, i: usize) -> Result<std::net::Ipv4Addr> {
        match self.lan.as_mut() {
            Some(lan) => lan.add_uplink(i),
            None => bail!("an uplink needs a namespace testnet"),
        }
    }

    /// A `kith` command on node `i`'s home (run from the root namespace: the control socket is
    /// a file in the home).
    pub fn cmd(&self, i: usize) -> Command {
        let mut c = Command::new(&self.kith);
        c.arg("--home")
            .arg(&self.nodes[i].home)
            .env_remove("KITH_HOME")
            .current_dir(self.dir.path());
        c
    }

    /// Runs a kith command on node `i`.
    pub fn kith(&self, i: usize, args: &[&str]) -> Output {
        self.cmd(i).args(args).output().expect("kith runs")
    }

    /// Runs a kith command on node `i` and returns its stdout, failing with its stderr.
    pub fn kith_ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.kith(i, args);
        if !out.status.success() {
            bail!("node {i}: kith {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a kith command with `--json` and parses its output.
    pub fn json(&self, i: usize, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.push("--json");
        Ok(serde_json::from_str(&self.kith_ok(i, &a)?)?)
    }

    /// Makes node `i`'s home hold the identity of node `from` (a second device of one person).
    pub fn share_identity(&self, i: usize, from: usize) -> Result<()> {
        let export = self.dir.path().join(format!("identity-{from}.age"));
        if !export.exists() {
            let out = self
                .cmd(from)
                .args(["key", "export"])
                .arg(&export)
                .env("KITH_PASSPHRASE", "testnet")
                .output()?;
            if !out.status.success() {
                bail!("export: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let out = self
            .cmd(i)
            .args(["init", "--import"])
            .arg(&export)
            .env("KITH_PASSPHRASE", "testnet")
            .output()?;
        if !out.status.success() {
            bail!("import: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Starts node `i` and waits until it answers.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let mut args: Vec<String> =
            vec!["--home".into(), node.home.display().to_string(), "up".into()];
        if self.layout == Layout::Loopback {
            args.extend(
                ["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-mdns"].map(String::from),
            );
        }
        args.extend(node.up_args.iter().cloned());
        let mut cmd = match &self.lan {
            Some(lan) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", lan.ns(i)]).arg(&self.kith);
                c
            }
            None => Command::new(&self.kith),
        };
        let log = File::options().create(true).append(true).open(&node.log)?;
        cmd.args(&args)
            .envs(node.up_env.iter().map(|(k, v)| (k, v)))
            .env_remove("KITH_HOME")
            .env(
                "RUST_LOG",
                std::env::var("KITH_TESTNET_LOG").unwrap_or_else(|_| {
                    "info,iroh=warn,iroh::protocol=error,noq_proto=error,actix_server=warn,\
                     iroh_relay::server::http_server=error"
                        .into()
                }),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl in the child before exec; the node dies with the test that made it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context("cannot start kith up")?;
        self.nodes[i].child = Some(child);
        self.nodes[i].started = Some(Instant::now());
        self.wait_for(START_TIMEOUT, &format!("node {i} to come up"), |net| {
            if let Some(c) = net.nodes[i].child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(anyhow::anyhow!("node {i} exited ({status}): {}", net.log(i)));
            }
            // Only ask once the control socket answers: a `kith status` before that would run
            // locally and hold the home the daemon is taking.
            let sock = net.nodes[i].home.join("control.sock");
            if std::os::unix::net::UnixStream::connect(&sock).is_err() {
                return Ok(false);
            }
            Ok(net.json(i, &["status"]).is_ok_and(|v| v["running"] == true))
        })?;
        if self.layout == Layout::Loopback && self.auto_connect {
            for j in 0..self.nodes.len() {
                if j != i && self.is_running(j) {
                    self.connect(i, j)?;
                    self.connect(j, i)?;
                }
            }
        }
        Ok(())
    }

    /// Gives node `i` the ticket of node `j`.
    pub fn connect(&self, i: usize, j: usize) -> Result<()> {
        let ticket = self.kith_ok(j, &["id", "--ticket"])?;
        self.kith_ok(i, &["peer", "add", ticket.trim()])?;
        Ok(())
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        Ok(())
    }

    /// When node `i` was last started.
    pub fn started_at(&self, i: usize) -> Option<Instant> {
        self.nodes[i].started
    }

    /// Stops node `i` with SIGTERM and waits for it; returns how long it took.
    pub fn stop(&mut self, i: usize) -> Result<Duration> {
        let Some(mut child) = self.nodes[i].child.take() else { return Ok(Duration::ZERO) };
        let t = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait()?;
        if !status.success() {
            bail!("node {i} did not stop cleanly ({status}): {}", self.log(i));
        }
        Ok(t.elapsed())
    }

    /// Stops every node at once with SIGTERM and waits for them; a node still running after
    /// `limit` is killed. Fails naming the nodes that did not stop cleanly.
    pub fn stop_all(&mut self, limit: Duration) -> Result<()> {
        for c in self.nodes.iter().filter_map(|n| n.child.as_ref()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + limit;
        let mut unclean = Vec::new();
        for i in 0..self.nodes.len() {
            let Some(mut child) = self.nodes[i].child.take() else { continue };
            let status = loop {
                match child.try_wait()? {
                    Some(status) => break Some(status),
                    None if Instant::now() > deadline => break None,
                    None => std::thread::sleep(POLL),
                }
            };
            match status {
                Some(s) if s.success() => {}
                Some(s) => unclean.push(format!("node {i} ({s})")),
                None => {
                    child.kill()?;
                    child.wait()?;
                    unclean.push(format!("node {i} (killed after {limit:?})"));
                }
            }
        }
        if !unclean.is_empty() {
            bail!(
                "did not stop cleanly: {} (logs in {})",
                unclean.join(", "),
                self.dir().display()
            );
        }
        Ok(())
    }

    /// Kills node `i` with SIGKILL (a crash, or the power cord).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Whether node `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Node `i`'s peers, from `kith peers --json`.
    pub fn peers(&self, i: usize) -> Result<Vec<Value>> {
        Ok(self.json(i, &["peers"])?.as_array().cloned().unwrap_or_default())
    }

    /// Node `i`'s node id.
    pub fn id(&self, i: usize) -> Result<String> {
        Ok(self.json(i, &["id"])?["node"].as_str().unwrap_or("").to_string())
    }

    /// Polls `cond` until it holds, fails, or `limit` passes; returns how long it took.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&mut Self) -> Result<bool>,
    ) -> Result<Duration> {
        let t = Instant::now();
        loop {
            if cond(self)? {
                return Ok(t.elapsed());
            }
            if t.elapsed() > limit {
                bail!("timed out after {limit:?} waiting for {what}");
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
