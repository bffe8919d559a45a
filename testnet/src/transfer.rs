//! Moving data between nodes: kith against a raw iroh stream in the same run, and discovery
//! time on a LAN of namespaces.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use iroh::endpoint::presets;
use iroh::{Endpoint, RelayMode};
use serde::Serialize;

use crate::figures::round;
use crate::net::{Layout, Testnet};
use crate::proc::median;

/// The ALPN of the raw stream measured for comparison.
const RAW_ALPN: &[u8] = b"kith-bench/raw/1";
/// Write size on the raw stream.
const RAW_WRITE: usize = 1 << 20;

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    /// Bytes moved each round.
    pub bytes: u64,
    /// Raw iroh: one stream, send to receive, into memory.
    pub raw: Vec<Duration>,
    /// Raw iroh: one stream, written to a file as it arrives.
    pub raw_file: Vec<Duration>,
    /// kith: fetching the object into the second device's store.
    pub fetch: Vec<Duration>,
    /// kith: `kith get` to a file on the second device (fetch, then restore).
    pub get: Vec<Duration>,
    /// Discovery: from a node's start until it lists both other nodes as reachable, the two
    /// having run for a while (a node joining a LAN).
    pub discovery: Vec<Duration>,
    /// The same with all three started within a second (a LAN coming back after a power cut):
    /// mDNS responders may multicast a record only once a second (RFC 6762 §6), so the
    /// peers' answers to the last node's first query wait for that window.
    pub discovery_together: Vec<Duration>,
}

/// The figures of [`TransferReport`] as a benchmark's JSON line (medians; see
/// [`figures`](crate::figures)).
#[derive(Debug, Clone, Serialize)]
pub struct TransferFigures {
    /// `"transfer"`.
    pub bench: &'static str,
    /// Object size (MiB).
    pub mib: u64,
    /// Rounds.
    pub rounds: usize,
    /// Raw iroh stream into memory (MB/s).
    pub raw_memory_mbps: f64,
    /// Raw iroh stream written to a file and synced (MB/s).
    pub raw_file_mbps: f64,
    /// kith fetch into the store (MB/s).
    pub fetch_mbps: f64,
    /// `kith get`: fetch, then restore to a file (MB/s).
    pub get_mbps: f64,
    /// kith fetch over raw iroh to a file (throughput ratio).
    pub fetch_over_raw_file: f64,
    /// kith fetch over raw iroh into memory.
    pub fetch_over_raw_memory: f64,
    /// `kith get` over raw iroh to a file.
    pub get_over_raw_file: f64,
    /// Discovery rounds.
    pub discovery_rounds: usize,
    /// Discovery, start of the last node to both peers reachable: median (s), if measured.
    pub discovery_s: Option<f64>,
    /// Discovery: the slowest round (s), if measured.
    pub discovery_max_s: Option<f64>,
    /// Discovery with all three nodes started together: median (s), if measured.
    pub discovery_together_s: Option<f64>,
}

/// Sends `bytes` over one iroh stream between two endpoints on loopback; returns the time
/// from the first write to the last byte read (and written to `file`, if given).
pub async fn raw_iroh(bytes: u64, file: Option<PathBuf>) -> Result<Duration> {
    let bind = || async {
        Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .clear_address_lookup()
            .clear_ip_transports()
            .alpns(vec![RAW_ALPN.to_vec()])
            .bind_addr("127.0.0.1:0")?
            .bind()
            .await
            .context("bind")
    };
    let (a, b) = (bind().await?, bind().await?);
    let addr = b.addr();
    let receiver = tokio::spawn(async move {
        let n = raw_receive(&b, file.as_deref()).await?;
        b.close().await;
        anyhow::Ok(n)
    });
    let conn = a.connect(addr, RAW_ALPN).await?;
    let start = Instant::now();
    let (_, sent) = raw_send(&conn, bytes).await?;
    let got = receiver.await??;
    let took = start.elapsed();
    a.close().await;
    if got != sent {
        bail!("raw stream moved {got} of {sent} bytes");
    }
    Ok(took)
}

/// The receiving end of a raw stream: the next connection to `ep`, its first stream read to
/// its end into `file` (written through a buffer and synced) or only counted; the bytes read.
pub(crate) async fn raw_receive(ep: &Endpoint, file: Option<&Path>) -> Result<u64> {
    let conn = ep.accept().await.context("no connection")?.await?;
    let (_, mut recv) = conn.accept_bi().await?;
    let mut out = match file {
        Some(f) => {
            Some(tokio::io::BufWriter::with_capacity(RAW_WRITE, tokio::fs::File::create(f).await?))
        }
        None => None,
    };
    let mut n = 0u64;
    while let Some(chunk) = recv.read_chunk(RAW_WRITE).await? {
        n += chunk.len() as u64;
        if let Some(o) = &mut out {
            tokio::io::AsyncWriteExt::write_all(o, &chunk).await?;
        }
    }
    if let Some(mut o) = out {
        tokio::io::AsyncWriteExt::flush(&mut o).await?;
        o.into_inner().sync_data().await?;
    }
    conn.close(0u32.into(), b"done");
    Ok(n)
}

/// The sending end of a raw stream: at least `bytes` in 1 MiB writes on a new stream of
/// `conn`, finished; the stream and the bytes sent.
pub(crate) async fn raw_send(
    conn: &iroh::endpoint::Connection,
    bytes: u64,
) -> Result<(iroh::endpoint::SendStream, u64)> {
    let (mut send, _recv) = conn.open_bi().await?;
    let block = bytes::Bytes::from(vec![0x5a; RAW_WRITE]);
    let mut sent = 0u64;
    while sent < bytes {
        send.write_chunk(block.clone()).await?;
        sent += RAW_WRITE as u64;
    }
    send.finish()?;
    Ok((send, sent))
}

/// Runs the rounds: raw iroh and kith alternating, then discovery rounds in namespaces.
pub fn run(
    kith: &Path,
    mib: u64,
    rounds: usize,
    discovery_rounds: usize,
) -> Result<TransferReport> {
    let bytes = mib << 20;
    let mut report = TransferReport { bytes, ..TransferReport::default() };
    let rt = tokio::runtime::Runtime::new()?;

    let mut net = Testnet::new(kith, 2, Layout::Loopback)?;
    net.kith_ok(0, &["init"])?;
    net.share_identity(1, 0)?;
    net.start_all()?;
    let file = net.dir().join("object.bin");
    write_random(&file, bytes)?;
    let id = net.kith_ok(0, &["put", file.to_str().context("path")?])?.trim().to_string();
    std::fs::remove_file(&file)?;
    for round in 0..rounds {
        let raw = |file: Option<PathBuf>| -> Result<Duration> {
            settle()?;
            let d = rt.block_on(raw_iroh(bytes, file.clone()))?;
            if let Some(f) = file {
                std::fs::remove_file(f)?;
            }
            Ok(d)
        };
        let kith_round = |net: &Testnet| -> Result<(Duration, Duration)> {
            settle()?;
            let out: PathBuf = net.dir().join(format!("got-{round}"));
            let t = Instant::now();
            let v = net.json(1, &["get", &id, "-o", out.to_str().context("path")?])?;
            let get = t.elapsed();
            if v["fetched_bytes"].as_u64().unwrap_or(0) < bytes {
                bail!(
                    "round {round}: only {} bytes fetched: the copy was not forgotten",
                    v["fetched_bytes"]
                );
            }
            std::fs::remove_file(&out)?;
            // Forget the copy, so the next round fetches again.
            net.kith_ok(1, &["rm", &id])?;
            net.kith_ok(1, &["gc"])?;
            Ok((Duration::from_secs_f64(v["fetch_seconds"].as_f64().unwrap_or(0.0)), get))
        };
        // Alternate which goes first; the machine is shared and noisy.
        let raw_file = net.dir().join("raw.bin");
        let (fetch, get) = if round % 2 == 0 {
            report.raw.push(raw(None)?);
            report.raw_file.push(raw(Some(raw_file))?);
            kith_round(&net)?
        } else {
            let k = kith_round(&net)?;
            report.raw_file.push(raw(Some(raw_file))?);
            report.raw.push(raw(None)?);
            k
        };
        report.fetch.push(fetch);
        report.get.push(get);
        eprintln!(
            "round {}: raw {:?}, raw to a file {:?}, fetch {:?}, get {:?}",
            round + 1,
            report.raw[round],
            report.raw_file[round],
            report.fetch[round],
            report.get[round]
        );
    }
    drop(net);

    let reachable = |n: &mut Testnet, i: usize| -> Result<usize> {
        Ok(n.peers(i)?.iter().filter(|p| p["state"] == "reachable").count())
    };
    for round in 0..discovery_rounds {
        // A node joining a LAN: the other two found each other and have been quiet for longer
        // than mDNS's one-second multicast window.
        let mut net = Testnet::new(kith, 3, Layout::Namespaces)?;
        net.start(0)?;
        net.start(1)?;
        net.wait_for(Duration::from_secs(30), "the first two", |n| Ok(reachable(n, 1)? == 1))?;
        std::thread::sleep(Duration::from_millis(1500));
        net.start(2)?;
        let started = net.started_at(2).context("started")?;
        net.wait_for(Duration::from_secs(30), "discovery", |n| Ok(reachable(n, 2)? == 2))?;
        report.discovery.push(started.elapsed());
        drop(net);
        // The three started together.
        let mut net = Testnet::new(kith, 3, Layout::Namespaces)?;
        net.start(0)?;
        net.start(1)?;
        net.start(2)?;
        let started = net.started_at(2).context("started")?;
        net.wait_for(Duration::from_secs(30), "discovery", |n| Ok(reachable(n, 2)? == 2))?;
        report.discovery_together.push(started.elapsed());
        eprintln!(
            "discovery round {}: joining {:?}, all together {:?}",
            round + 1,
            report.discovery[round],
            report.discovery_together[round]
        );
    }
    Ok(report)
}

/// Flushes dirty pages, so one step's write-back does not slow the next one down.
pub(crate) fn settle() -> Result<()> {
    crate::proc::run(&mut std::process::Command::new("sync"))?;
    Ok(())
}

fn write_random(path: &Path, bytes: u64) -> Result<()> {
    write_random_seeded(path, bytes, 0)
}

/// Writes `bytes` pseudo-random (incompressible) bytes; different seeds share no chunks.
pub(crate) fn write_random_seeded(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

impl TransferReport {
    /// The figures for the JSON line.
    pub fn figures(&self) -> TransferFigures {
        let mbps = |v: &[Duration]| self.bytes as f64 / median(v.to_vec()).as_secs_f64() / 1e6;
        let (raw, raw_file, fetch, get) =
            (mbps(&self.raw), mbps(&self.raw_file), mbps(&self.fetch), mbps(&self.get));
        let secs = |d: Duration| round(d.as_secs_f64(), 3);
        let discovery = (!self.discovery.is_empty()).then(|| median(self.discovery.clone()));
        TransferFigures {
            bench: "transfer",
            mib: self.bytes >> 20,
            rounds: self.raw.len(),
            raw_memory_mbps: round(raw, 1),
            raw_file_mbps: round(raw_file, 1),
            fetch_mbps: round(fetch, 1),
            get_mbps: round(get, 1),
            fetch_over_raw_file: round(fetch / raw_file, 3),
            fetch_over_raw_memory: round(fetch / raw, 3),
            get_over_raw_file: round(get / raw_file, 3),
            discovery_rounds: self.discovery.len(),
            discovery_s: discovery.map(secs),
            discovery_max_s: self.discovery.iter().max().copied().map(secs),
            discovery_together_s: (!self.discovery_together.is_empty())
                .then(|| secs(median(self.discovery_together.clone()))),
        }
    }

    /// A markdown table of medians and ratios.
    pub fn markdown(&self) -> String {
        let mbps = |d: Duration| self.bytes as f64 / d.as_secs_f64() / 1e6;
        let m = |v: &Vec<Duration>| median(v.clone());
        let (raw, raw_file, fetch, get) =
            (m(&self.raw), m(&self.raw_file), m(&self.fetch), m(&self.get));
        let ratio = |base: Duration, d: Duration| base.as_secs_f64() / d.as_secs_f64();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| {} MiB on loopback, {} rounds, medians | MB/s (s) | / raw iroh to memory | / raw iroh to a file |",
            self.bytes >> 20,
            self.raw.len()
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
        let mut row = |name: &str, d: Duration| {
            let _ = writeln!(
                out,
                "| {name} | {:.0} ({:.2}) | {:.2} | {:.2} |",
                mbps(d),
                d.as_secs_f64(),
                ratio(raw, d),
                ratio(raw_file, d)
            );
        };
        row("raw iroh stream, into memory", raw);
        row("raw iroh stream, written to a file and synced", raw_file);
        row("kith fetch into the store (verified, packed, synced, indexed)", fetch);
        row("kith get (fetch, then restore to a file)", get);
        if !self.discovery.is_empty() {
            let mut d = self.discovery.clone();
            d.sort();
            let mut t = self.discovery_together.clone();
            t.sort();
            let _ = writeln!(
                out,
                "\nDiscovery, 3 nodes in namespaces on a bridge, start of the last node to both peers reachable, {} rounds: joining two nodes that run already, median {:.2} s, max {:.2} s; all three started together, median {:.2} s, max {:.2} s.",
                d.len(),
                median(d.clone()).as_secs_f64(),
                d.last().map_or(0.0, |x| x.as_secs_f64()),
                median(t.clone()).as_secs_f64(),
                t.last().map_or(0.0, |x| x.as_secs_f64())
            );
        }
        out
    }
}
