//! Network namespaces for testnets: a LAN of nodes joined by a bridge, made and removed here.
//!
//! Every namespace is named `kt<pid>...` after the process that made it. They are removed when
//! the [`Lan`] is dropped (also when a test panics); when the process ends any other way
//! (Ctrl-C, SIGTERM, SIGKILL) a watchdog process, started in its own session so the terminal's
//! signals do not reach it, removes them once the maker is gone; and the next process that makes
//! a LAN removes any namespace whose maker no longer runs.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// The LAN's subnet: nodes get `10.99.0.1`, `10.99.0.2`, ...
pub const SUBNET: [u8; 3] = [10, 99, 0];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bridged LAN of namespaces.
#[derive(Debug)]
pub struct Lan {
    switch: String,
    nodes: Vec<String>,
    ips: Vec<Ipv4Addr>,
    routers: Vec<String>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out =
        Command::new("ip").args(args).output().context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs a command inside namespace `ns`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(["netns", "exec", ns, program]).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{program} {} in {ns}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a thread that has joined namespace `ns` (sockets it opens live there), and
/// returns what it returns.
pub fn on_ns_thread<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        // SAFETY: setns on this thread only, with a namespace file descriptor we hold open.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("cannot join {path}: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in {ns} panicked"))?
}

impl Lan {
    /// Makes `n` node namespaces on one bridge. Each has `lo` and `eth0` (10.99.0.i+1/24) up.
    pub fn new(n: usize) -> Result<Lan> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            bail!("network namespaces need root: run the tests as root");
        }
        sweep_stale();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let switch = format!("kt{pid}x{k}s");
        let mut lan =
            Lan { switch: switch.clone(), nodes: Vec::new(), ips: Vec::new(), routers: Vec::new() };
        lan.add_ns(&switch)?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("kt{pid}x{k}n{i}");
            lan.add_ns(&ns)?;
            let port = format!("p{i}");
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &switch,
            ])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", lan_ip(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
            lan.nodes.push(ns);
            lan.ips.push(lan_ip(i));
        }
        let names: Vec<String> = lan.nodes.iter().chain([&lan.switch]).cloned().collect();
        watchdog(&names)?;
        Ok(lan)
    }

    /// Puts node `i` behind a NAT router of its own, as a home router does: the router takes
    /// the node's place on the LAN (its address, its port on the bridge) and masquerades the
    /// node's subnet `10.98.i.0/24` (the node is `10.98.i.2`, its default route the router);
    /// nothing on the LAN can open a connection to the node. Call before the node starts.
    pub fn put_behind_nat(&mut self, i: usize) -> Result<()> {
        let (pid, node) = (std::process::id(), self.nodes[i].clone());
        let router = format!("{node}r");
        self.add_ns(&router)?;
        self.routers.push(router.clone());
        watchdog(std::slice::from_ref(&router))?;
        // The node's cable now goes to the router's inside port.
        ip(&["-n", &node, "link", "del", "eth0"])?;
        let port = format!("p{i}");
        ip(&[
            "-n",
            &router,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ])?;
        ip(&["-n", &router, "addr", "add", &format!("{}/24", lan_ip(i)), "dev", "eth0"])?;
        ip(&["-n", &router, "link", "set", "eth0", "up"])?;
        ip(&["-n", &self.switch, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &self.switch, "link", "set", &port, "up"])?;
        ip(&[
            "-n", &router, "link", "add", "in0", "type", "veth", "peer", "name", "eth0", "netns",
            &node,
        ])?;
        let inside = Ipv4Addr::new(10, 98, i as u8, 2);
        ip(&["-n", &router, "addr", "add", &format!("10.98.{i}.1/24"), "dev", "in0"])?;
        ip(&["-n", &router, "link", "set", "in0", "up"])?;
        ip(&["-n", &node, "addr", "add", &format!("{inside}/24"), "dev", "eth0"])?;
        ip(&["-n", &node, "link", "set", "eth0", "up"])?;
        ip(&["-n", &node, "route", "add", "default", "via", &format!("10.98.{i}.1")])?;
        in_ns(&router, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        // Unsolicited packets from outside are dropped before conntrack confirms them, as home
        // routers do; a confirmed entry for one would take the tuple a later outgoing packet
        // needs, and masquerading would then pick another port.
        let rules = "table ip kith_nat {\n  chain post {\n    type nat hook postrouting priority 100;\n    oifname \"eth0\" masquerade\n  }\n  chain in {\n    type filter hook input priority 0;\n    iifname \"eth0\" ct state new drop\n  }\n}\n";
        let file = std::env::temp_dir().join(format!("kith-nat-{pid}-{router}.nft"));
        std::fs::write(&file, rules)?;
        let loaded = in_ns(&router, "nft", &["-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        loaded.context("cannot set up masquerading (install nftables)")?;
        self.ips[i] = inside;
        Ok(())
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// Node `i`'s address (behind its NAT, if it has one).
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.ips[i]
    }

    /// Takes node `i` off the LAN (its cable is pulled).
    pub fn cut(&self, i: usize) -> Result<()> {
        ip(&["-n", &self.switch, "link", "set", &format!("p{i}"), "down"])
    }

    /// Puts node `i` back on the LAN.
    pub fn heal(&self, i: usize) -> Result<()> {
        ip(&["-n", &self.switch, "link", "set", &format!("p{i}"), "up"])
    }

    /// Adds delay or loss on node `i`'s link (`tc netem` syntax, e.g. `delay 50ms loss 1%`).
    pub fn netem(&self, i: usize, spec: &str) -> Result<()> {
        let mut args = vec!["qdisc", "replace", "dev", "eth0", "root", "netem"];
        args.extend(spec.split_whitespace());
        in_ns(&self.nodes[i], "tc", &args).map(|_| ())
    }
}

/// Starts a process that removes namespaces `names` once this process has ended.
fn watchdog(names: &[String]) -> Result<()> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; for n in {names}; do ip netns del $n 2>/dev/null; done",
        pid = std::process::id(),
        names = names.join(" ")
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start the namespace watchdog (setsid, sh)")?;
    Ok(())
}

fn lan_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], (i + 1) as u8)
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(&self.routers).chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Removes namespaces left by testnet processes that no longer run.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("kt") else { continue };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let Ok(pid) = pid.parse::<i32>() else { continue };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
