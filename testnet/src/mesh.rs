//! Node-to-node benchmark through NATs: node 1 and node 2 sit behind NAT routers of their own,
//! node 0 on the LAN reaches both. Node 1 fetches an object only node 2 holds over the WebRTC
//! link signalled through node 0, and one only node 0 holds over iroh (directly, out through
//! its NAT), in the same run. The three are devices of one person, so they share the objects.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::net::{Layout, Testnet};
use crate::proc::median;

/// What the benchmark measured.
#[derive(Debug, Default)]
pub struct MeshReport {
    /// Bytes per object.
    pub bytes: u64,
    /// Making the WebRTC link (signalling through the neighbour, ICE, DTLS, SCTP), per run.
    pub link_setup: Vec<Duration>,
    /// `kith get` over the link, per run.
    pub link_get: Vec<Duration>,
    /// iroh dial and first ping from node 1's namespace to node 0, per run.
    pub iroh_setup: Vec<Duration>,
    /// `kith get` over iroh, per run.
    pub iroh_get: Vec<Duration>,
}

/// iroh: dial node `id` at `addr` from namespace `ns` and ping it (`kith/blobs/1`).
fn iroh_dial(ns: &str, id: &str, addr: std::net::SocketAddr) -> Result<Duration> {
    let id: iroh::EndpointId = id.parse().context("node id")?;
    crate::netns::on_ns_thread(ns, move || {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async move {
            use iroh::endpoint::presets;
            let ep = iroh::Endpoint::builder(presets::Minimal)
                .relay_mode(iroh::RelayMode::Disabled)
                .clear_address_lookup()
                .clear_ip_transports()
                .bind_addr("0.0.0.0:0")?
                .bind()
                .await?;
            let to = iroh::EndpointAddr::new(id).with_ip_addr(addr);
            let t = Instant::now();
            let conn = ep.connect(to, kith_node::net::blobs::ALPN).await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            let ping = kith_node::net::blobs::Request::Ping(7);
            kith_node::net::frame::write(&mut send, &ping).await?;
            send.finish()?;
            match kith_node::net::frame::read::<kith_node::net::blobs::Reply>(&mut recv).await? {
                Some(kith_node::net::blobs::Reply::Pong(7, _)) => {}
                other => bail!("unexpected reply {other:?}"),
            }
            let took = t.elapsed();
            conn.close(0u32.into(), b"done");
            ep.close().await;
            Ok(took)
        })
    })?
}

fn timed_get(net: &Testnet, i: usize, id: &str, out: &Path) -> Result<Duration> {
    let t = Instant::now();
    net.kith_ok(i, &["get", id, "-o", out.to_str().context("path")?])?;
    Ok(t.elapsed())
}

/// Runs `runs` rounds of `mib` MiB each way.
pub fn run(kith: &Path, mib: u64, runs: usize) -> Result<MeshReport> {
    let mut net = Testnet::new(kith, 3, Layout::Namespaces)?;
    net.put_behind_nat(1)?;
    net.put_behind_nat(2)?;
    net.kith_ok(2, &["init"])?;
    net.share_identity(0, 2)?;
    net.share_identity(1, 2)?;
    net.start_all()?;
    net.connect(1, 0)?;
    net.connect(2, 0)?;
    net.connect(1, 2)?;
    let (b, c) = (net.id(0)?, net.id(2)?);
    let bytes = mib << 20;
    let mut r = MeshReport { bytes, ..Default::default() };
    for run in 0..runs {
        if run > 0 {
            // A fresh start, so the link is made again.
            net.stop(1)?;
            net.start(1)?;
        }
        net.wait_for(Duration::from_secs(120), "node 1 to link node 2", |net| {
            let peers = net.peers(1)?;
            Ok(peers.iter().any(|p| {
                p["id"] == c.as_str()
                    && p["route"].as_str().is_some_and(|r| r.starts_with("webrtc"))
            }))
        })?;
        let setup = net.json(1, &["status"])?["mesh"]["last_setup_ms"].as_u64().unwrap_or(0);
        r.link_setup.push(Duration::from_millis(setup));
        r.iroh_setup.push(iroh_dial(
            net.lan().context("namespaces")?.ns(1),
            &b,
            "10.99.0.1:7781".parse()?,
        )?);
        let (x, y) = (net.dir().join(format!("x{run}")), net.dir().join(format!("y{run}")));
        std::fs::write(&x, crate::pseudo_bytes(bytes as usize, 2 * run as u64 + 1))?;
        std::fs::write(&y, crate::pseudo_bytes(bytes as usize, 2 * run as u64 + 2))?;
        let on_c = net.kith_ok(2, &["put", x.to_str().context("path")?])?.trim().to_string();
        let on_b = net.kith_ok(0, &["put", y.to_str().context("path")?])?.trim().to_string();
        let (ox, oy) = (net.dir().join(format!("ox{run}")), net.dir().join(format!("oy{run}")));
        r.link_get.push(timed_get(&net, 1, &on_c, &ox)?);
        r.iroh_get.push(timed_get(&net, 1, &on_b, &oy)?);
        if std::fs::read(&ox)? != std::fs::read(&x)? || std::fs::read(&oy)? != std::fs::read(&y)? {
            bail!("a fetched object differs from what was put");
        }
        for f in [x, y, ox, oy] {
            std::fs::remove_file(f)?;
        }
    }
    Ok(r)
}

impl MeshReport {
    /// The figures as a benchmark's JSON line (medians; see [`figures`](crate::figures)).
    pub fn figures(&self) -> serde_json::Value {
        use crate::figures::round;
        let ms = |v: &[Duration]| median(v.to_vec()).as_secs_f64() * 1000.0;
        let (ls, lg, is, ig) =
            (ms(&self.link_setup), ms(&self.link_get), ms(&self.iroh_setup), ms(&self.iroh_get));
        serde_json::json!({
            "bench": "mesh",
            "mib": self.bytes >> 20,
            "rounds": self.link_get.len(),
            "link_setup_ms": round(ls, 0),
            "link_get_ms": round(lg, 0),
            "iroh_setup_ms": round(is, 1),
            "iroh_get_ms": round(ig, 0),
            "link_mbps": round(self.bytes as f64 / 1e3 / lg, 1),
            "link_over_iroh": round(ig / lg, 3),
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let ms = |v: &[Duration]| median(v.to_vec()).as_secs_f64() * 1000.0;
        let mbs = |ms: f64| self.bytes as f64 / 1e6 / (ms / 1000.0);
        let (ls, lg, is, ig) =
            (ms(&self.link_setup), ms(&self.link_get), ms(&self.iroh_setup), ms(&self.iroh_get));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Medians of {} runs, {} MiB objects, node 1 behind a masquerading NAT:\n",
            self.link_get.len(),
            self.bytes >> 20
        );
        let _ = writeln!(s, "| path | setup | `kith get` | throughput | ratio to iroh |");
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
        let _ = writeln!(
            s,
            "| WebRTC link to node 2 (behind a second NAT), signalled through node 0 | {ls:.0} ms | {lg:.0} ms | {:.1} MB/s | {:.3} |",
            mbs(lg),
            ig / lg
        );
        let _ = writeln!(
            s,
            "| iroh to node 0 (on the LAN), out through node 1's NAT | {is:.1} ms | {ig:.0} ms | {:.1} MB/s | 1 |",
            mbs(ig)
        );
        s
    }
}
