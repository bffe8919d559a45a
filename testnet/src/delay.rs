//! Delay and reordering on a node's link without `netem` (this machine's kernel has none, nor
//! nftables' `queue`): inside the node's namespace, its packets to the LAN are routed into a
//! TUN device; a thread holds each for a delay plus a random jitter (so later packets overtake
//! earlier ones), then sends it on through a raw socket whose mark policy routing sends out of
//! the real interface. Only what the node sends is delayed (a one-way delay); mDNS multicast
//! and loopback are left alone.
//!
//! ```text
//! app ──▶ rule "to LAN: table 77" ──▶ kdelay (TUN) ──▶ thread: hold delay + jitter
//!                                                         │
//!   eth0 ◀── rule "fwmark 0x77: main" ◀── raw socket ◀────┘
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::netns::{SUBNET, in_ns};

/// The TUN device's name in the node's namespace.
const DEV: &str = "kdelay";
/// The routing table and the mark that bypasses it.
const TABLE: &str = "77";
const MARK: u32 = 0x77;

/// What a delayed link carried.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Delayed {
    /// Packets held and sent on.
    pub packets: u64,
    /// Of them, sent before a packet that had come in earlier.
    pub reordered: u64,
    /// Packets that could not be sent on (counted, not retried: the network loses packets).
    pub failed: u64,
}

/// A delayed link; [`DelayedLink::stop`] (or dropping it) puts the link back.
#[derive(Debug)]
pub struct DelayedLink {
    ns: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Result<Delayed>>>>,
}

/// Delays what namespace `ns` (whose LAN address is `src`) sends to the LAN by `delay` plus up
/// to `jitter`, drawn from `seed`.
pub fn start(
    ns: &str,
    src: Ipv4Addr,
    delay: Duration,
    jitter: Duration,
    seed: u64,
) -> Result<DelayedLink> {
    let lan = format!("{}.{}.{}.0/24", SUBNET[0], SUBNET[1], SUBNET[2]);
    in_ns(ns, "ip", &["tuntap", "add", "dev", DEV, "mode", "tun"])?;
    let mut link =
        DelayedLink { ns: ns.to_string(), stop: Arc::new(AtomicBool::new(false)), thread: None };
    let setup = || -> Result<()> {
        in_ns(ns, "ip", &["link", "set", DEV, "up"])?;
        in_ns(
            ns,
            "ip",
            &["route", "add", &lan, "dev", DEV, "src", &src.to_string(), "table", TABLE],
        )?;
        in_ns(
            ns,
            "ip",
            &["rule", "add", "fwmark", &MARK.to_string(), "lookup", "main", "pref", "90"],
        )?;
        in_ns(ns, "ip", &["rule", "add", "to", &lan, "lookup", TABLE, "pref", "100"])?;
        Ok(())
    };
    let (stop, name) = (link.stop.clone(), ns.to_string());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    link.thread = Some(std::thread::spawn(move || {
        crate::netns::on_ns_thread(&name, move || hold(stop, delay, jitter, seed, ready_tx))
    }));
    // The thread has attached to the device (or failed) before the traffic is sent to it.
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("delay in {ns}: {e}"),
        Err(_) => {
            let why = link.thread.take().map(|t| t.join());
            bail!("delay in {ns}: the thread did not start: {why:?}");
        }
    }
    setup()?;
    Ok(link)
}

impl DelayedLink {
    /// Puts the link back and says what it carried.
    pub fn stop(mut self) -> Result<Delayed> {
        self.undo()
    }

    fn undo(&mut self) -> Result<Delayed> {
        self.stop.store(true, Ordering::Release);
        let _ = in_ns(&self.ns, "ip", &["rule", "del", "pref", "100"]);
        let _ = in_ns(&self.ns, "ip", &["rule", "del", "pref", "90"]);
        let _ = in_ns(&self.ns, "ip", &["route", "flush", "table", TABLE]);
        let carried = match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("the delay thread panicked"))???,
            None => Delayed::default(),
        };
        let _ = in_ns(&self.ns, "ip", &["link", "del", DEV]);
        Ok(carried)
    }
}

impl Drop for DelayedLink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.undo();
        }
    }
}

/// The device, opened by a thread in the namespace.
struct Tun(std::os::fd::OwnedFd);

fn open_tun() -> Result<Tun> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TUN: libc::c_short = 0x0001;
    const IFF_NO_PI: libc::c_short = 0x1000;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    // SAFETY: a plain open of a device path given as a NUL-terminated string.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
    if fd < 0 {
        bail!("cannot open /dev/net/tun: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI, pad: [0; 22] };
    req.name[..DEV.len()].copy_from_slice(DEV.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an `ifreq`, which `IfReq` lays out (name, flags, and
    // room for the rest of the union); `req` outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        bail!("cannot attach to {DEV}: {}", std::io::Error::last_os_error());
    }
    Ok(Tun(fd))
}

/// A raw IPv4 socket whose packets bypass the delay (they carry [`MARK`]).
fn raw_socket() -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("cannot open a raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mark: libc::c_int = MARK as libc::c_int;
    // SAFETY: SO_MARK takes an int; the pointer and length describe `mark`.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        bail!("cannot mark the raw socket: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// The thread: reads packets from the device, holds each until its time, sends it on.
fn hold(
    stop: Arc<AtomicBool>,
    delay: Duration,
    jitter: Duration,
    seed: u64,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<Delayed> {
    use std::os::fd::AsRawFd;
    let opened = open_tun().and_then(|t| Ok((t, raw_socket()?)));
    let (tun, raw) = match opened {
        Ok(x) => {
            let _ = ready.send(Ok(()));
            x
        }
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift64
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let jitter_us = jitter.as_micros().max(1) as u64;
    // (when due, arrival number), packet
    let mut held: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut out = Delayed::default();
    let mut arrived = 0u64;
    let mut last_sent = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        let stopping = stop.load(Ordering::Acquire);
        // Send what is due (everything once stopping).
        let now = Instant::now();
        while let Some(Reverse((due, _, _))) = held.peek() {
            if *due > now && !stopping {
                break;
            }
            let Some(Reverse((_, n, pkt))) = held.pop() else { break };
            if n < last_sent {
                out.reordered += 1;
            }
            last_sent = last_sent.max(n);
            if send(raw.as_raw_fd(), &pkt) {
                out.packets += 1;
            } else {
                out.failed += 1;
            }
        }
        if stopping {
            return Ok(out);
        }
        let wait = held
            .peek()
            .map_or(Duration::from_millis(20), |Reverse((due, _, _))| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(20));
        let mut pfd = libc::pollfd { fd: tun.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, wait.as_millis().max(1) as libc::c_int) };
        if ready <= 0 {
            continue;
        }
        loop {
            // SAFETY: reads at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(tun.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let pkt = buf[..n as usize].to_vec();
            // IPv4 only (the LAN has no IPv6 routes through the device).
            if pkt.len() < 20 || pkt[0] >> 4 != 4 {
                continue;
            }
            let due = Instant::now() + delay + Duration::from_micros(next() % jitter_us);
            held.push(Reverse((due, arrived, pkt)));
            arrived += 1;
        }
    }
}

/// Sends an IPv4 packet (its own header) to its destination through the raw socket.
fn send(fd: libc::c_int, pkt: &[u8]) -> bool {
    let dst = [pkt[16], pkt[17], pkt[18], pkt[19]];
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst) },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and the address are valid for the call; lengths describe them.
    let n = unsafe {
        libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    n == pkt.len() as isize
}
