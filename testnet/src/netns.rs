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
    /// After [`Lan::split`]: the second neighbourhood's bridge, its first node, and the
    /// router between the two.
    second: Option<(String, usize, String)>,
}

/// The second neighbourhood's subnet (after [`Lan::split`]).
pub const SUBNET2: [u8; 3] = [10, 97, 0];

/// The address of the node given an uplink ([`Lan::add_uplink`]).
pub const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 200);

/// What the router between two neighbourhoods does to the link.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Rate each way (Mbit/s), shaped with `tc tbf`.
    pub mbit: u32,
    /// Packets dropped each way, per thousand (nftables `numgen random`).
    pub loss_permille: u32,
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
        let mut lan = Lan {
            switch: switch.clone(),
            nodes: Vec::new(),
            ips: Vec::new(),
            routers: Vec::new(),
            second: None,
        };
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

    /// Splits the LAN in two neighbourhoods: nodes `from..` move to a second bridge with
    /// subnet `10.97.0.0/24`, and a router namespace joins the two, shaping the link as
    /// `shape` says (a slow, lossy link between two streets). Multicast (mDNS) does not cross
    /// it; unicast does, through the router. Call before the nodes start.
    pub fn split(&mut self, from: usize, shape: LinkShape) -> Result<()> {
        if self.second.is_some() || from == 0 || from >= self.nodes.len() {
            bail!("split once, with nodes on both sides");
        }
        let base = self.switch.trim_end_matches('s').to_string();
        let (switch2, router) = (format!("{base}t"), format!("{base}g"));
        self.add_ns(&switch2)?;
        self.add_ns(&router)?;
        watchdog(&[switch2.clone(), router.clone()])?;
        ip(&["-n", &switch2, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch2, "link", "set", "br0", "up"])?;
        for (dev, sw, port, addr) in [
            ("a0", &self.switch, "ra", format!("{}.254/24", dotted(SUBNET))),
            ("b0", &switch2, "rb", format!("{}.254/24", dotted(SUBNET2))),
        ] {
            ip(&[
                "-n", &router, "link", "add", dev, "type", "veth", "peer", "name", port, "netns",
                sw,
            ])?;
            ip(&["-n", &router, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", &router, "link", "set", dev, "up"])?;
            ip(&["-n", sw, "link", "set", port, "master", "br0"])?;
            ip(&["-n", sw, "link", "set", port, "up"])?;
            let rate = format!("{}mbit", shape.mbit);
            in_ns(
                &router,
                "tc",
                &[
                    "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "32kb",
                    "latency", "200ms",
                ],
            )?;
        }
        in_ns(&router, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        if shape.loss_permille > 0 {
            let rules = format!(
                "table ip kith_loss {{\n  chain drops {{\n    type filter hook forward priority 0;\n    numgen random mod 1000 < {} drop\n  }}\n}}\n",
                shape.loss_permille
            );
            let file =
                std::env::temp_dir().join(format!("kith-loss-{}-{router}.nft", std::process::id()));
            std::fs::write(&file, rules)?;
            let loaded = in_ns(&router, "nft", &["-f", &file.to_string_lossy()]);
            let _ = std::fs::remove_file(&file);
            loaded.context("cannot set up packet loss (install nftables)")?;
        }
        for i in 0..self.nodes.len() {
            let node = self.nodes[i].clone();
            if i >= from {
                // Its cable moves to the second bridge, with an address there.
                ip(&["-n", &self.switch, "link", "del", &format!("p{i}")])?;
                let port = format!("p{i}");
                ip(&[
                    "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                    "netns", &switch2,
                ])?;
                let addr = Ipv4Addr::new(SUBNET2[0], SUBNET2[1], SUBNET2[2], (i - from + 1) as u8);
                ip(&["-n", &node, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
                ip(&["-n", &node, "link", "set", "eth0", "up"])?;
                ip(&["-n", &switch2, "link", "set", &port, "master", "br0"])?;
                ip(&["-n", &switch2, "link", "set", &port, "up"])?;
                ip(&[
                    "-n",
                    &node,
                    "route",
                    "add",
                    &format!("{}.0/24", dotted(SUBNET)),
                    "via",
                    &format!("{}.254", dotted(SUBNET2)),
                ])?;
                self.ips[i] = addr;
            } else {
                ip(&[
                    "-n",
                    &node,
                    "route",
                    "add",
                    &format!("{}.0/24", dotted(SUBNET2)),
                    "via",
                    &format!("{}.254", dotted(SUBNET)),
                ])?;
            }
        }
        self.routers.push(router.clone());
        self.routers.push(switch2.clone());
        self.second = Some((switch2, from, router));
        Ok(())
    }

    /// Gives node `i` of the first neighbourhood a second cable, into the second one, with
    /// the address [`UPLINK`], which both reach: the second on its bridge, the first through
    /// node `i` (a host route on each of its other nodes), as an uplink's public address is.
    /// The node forwards nothing (a namespace's default), so with the router's link down
    /// ([`Lan::set_link`]) the neighbourhoods reach each other only through what node `i`
    /// serves. Call after [`Lan::split`], before the nodes start.
    pub fn add_uplink(&mut self, i: usize) -> Result<Ipv4Addr> {
        let Some((switch2, from, _)) = self.second.clone() else {
            bail!("an uplink joins two neighbourhoods: split the LAN first")
        };
        if i >= from {
            bail!("the uplink's node is in the first neighbourhood");
        }
        let node = self.nodes[i].clone();
        let port = format!("u{i}");
        ip(&[
            "-n", &node, "link", "add", "eth1", "type", "veth", "peer", "name", &port, "netns",
            &switch2,
        ])?;
        // Its way to the second subnet is now its own cable, not the router.
        ip(&["-n", &node, "route", "del", &format!("{}.0/24", dotted(SUBNET2))])?;
        ip(&["-n", &node, "addr", "add", &format!("{UPLINK}/24"), "dev", "eth1"])?;
        ip(&["-n", &node, "link", "set", "eth1", "up"])?;
        ip(&["-n", &switch2, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &switch2, "link", "set", &port, "up"])?;
        for j in (0..from).filter(|&j| j != i) {
            let (host, via) = (format!("{UPLINK}/32"), self.ips[i].to_string());
            ip(&["-n", &self.nodes[j], "route", "add", &host, "via", &via])?;
        }
        Ok(UPLINK)
    }

    /// Bytes the router between the neighbourhoods forwarded each way (`a0`: into the first,
    /// `b0`: into the second), from the interfaces' counters.
    pub fn link_bytes(&self) -> Result<(u64, u64)> {
        let Some((_, _, router)) = &self.second else { bail!("the LAN is not split") };
        let read = |dev: &str| -> Result<u64> {
            let s = in_ns(router, "cat", &[&format!("/sys/class/net/{dev}/statistics/tx_bytes")])?;
            Ok(s.trim().parse()?)
        };
        Ok((read("a0")?, read("b0")?))
    }

    /// Cuts the link between the neighbourhoods (`up`: heals it).
    pub fn set_link(&self, up: bool) -> Result<()> {
        let Some((_, _, router)) = &self.second else { bail!("the LAN is not split") };
        for dev in ["a0", "b0"] {
            ip(&["-n", router, "link", "set", dev, if up { "up" } else { "down" }])?;
        }
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

    /// The bridge node `i` is on.
    fn switch_of(&self, i: usize) -> &str {
        match &self.second {
            Some((s, from, _)) if i >= *from => s,
            _ => &self.switch,
        }
    }

    /// Takes node `i` off the LAN (its cable is pulled).
    pub fn cut(&self, i: usize) -> Result<()> {
        ip(&["-n", self.switch_of(i), "link", "set", &format!("p{i}"), "down"])
    }

    /// Puts node `i` back on the LAN.
    pub fn heal(&self, i: usize) -> Result<()> {
        ip(&["-n", self.switch_of(i), "link", "set", &format!("p{i}"), "up"])
    }

    /// Limits node `i`'s link to `mbit` Mbit/s each way (`tc tbf` on its side of the cable and
    /// on the bridge's): a home's wired or wireless link, which the node's own traffic fills.
    pub fn shape(&self, i: usize, mbit: u32) -> Result<()> {
        let rate = format!("{mbit}mbit");
        let tbf = |ns: &str, dev: &str| {
            in_ns(
                ns,
                "tc",
                &[
                    "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "64kb",
                    "latency", "100ms",
                ],
            )
        };
        tbf(&self.nodes[i], "eth0")?;
        tbf(self.switch_of(i), &format!("p{i}"))?;
        Ok(())
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

fn dotted(s: [u8; 3]) -> String {
    format!("{}.{}.{}", s[0], s[1], s[2])
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
