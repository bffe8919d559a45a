//! Relays: two neighbourhoods with no path between them but a member's node with an uplink
//! both reach, which serves a relay (`kith up --serve-relay`). Measured in one run: a device on
//! LAN 2 getting an object from the person's other device on LAN 1 through the relay (`kith
//! get`), against a raw iroh stream between the same two namespaces through the same relay,
//! written to a file; and the time from a node's start to its peer on the other side
//! answering through the relay.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use iroh::endpoint::presets;
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey, TransportAddr};
use serde::Serialize;

use crate::figures::round;
use crate::net::{Layout, Testnet};
use crate::netns::{LinkShape, on_ns_thread};
use crate::proc::median;

const LONG: Duration = Duration::from_secs(300);
const RAW_ALPN: &[u8] = b"kith-bench/relay/1";
const PORT: u16 = 7790;

/// What the relay benchmark measured (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct RelayFigures {
    /// `"relay"`.
    pub bench: &'static str,
    /// Object size (MiB).
    pub mib: u64,
    /// Rounds of each.
    pub rounds: usize,
    /// A raw iroh stream through the relay, written to a file and synced (MB/s).
    pub raw_relay_mbps: f64,
    /// `kith get` through the relay: fetch, then restore to a file (MB/s).
    pub get_relay_mbps: f64,
    /// kith over raw iroh through the same relay.
    pub get_over_raw_relay: f64,
    /// From `kith up` of the LAN 2 device to its LAN 1 device answering pings through the
    /// relay (s).
    pub reach_s: f64,
    /// Bytes the relay counted (its own figure, `kith status`) over the bytes moved.
    pub relayed_over_moved: f64,
}

/// A raw stream of `bytes` from an endpoint in `from_ns` to one in `to_ns`, both using only
/// the relay at `url`; the receiver writes to `file` and syncs. `admit` is called with both
/// endpoints' ids before they bind (the relay lets in only nodes it knows).
fn raw_through_relay(
    from_ns: &str,
    to_ns: &str,
    url: &iroh::RelayUrl,
    bytes: u64,
    file: &Path,
    admit: &dyn Fn(&[iroh::EndpointId]) -> Result<()>,
) -> Result<Duration> {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let to = b.public();
    eprintln!("relay-bench: letting the raw endpoints in");
    admit(&[a.public(), to])?;
    eprintln!("relay-bench: raw endpoints binding");
    let relay = |k: SecretKey, url: iroh::RelayUrl| async move {
        let map: iroh::RelayMap =
            [std::sync::Arc::new(iroh::RelayConfig::new(url, None))].into_iter().collect();
        let mut report = iroh::endpoint::NetReportConfig::minimal();
        report.https_probes = true;
        let ep = Endpoint::builder(presets::Minimal)
            .secret_key(k)
            .relay_mode(RelayMode::Custom(map))
            .net_report_config(report)
            .clear_address_lookup()
            .alpns(vec![RAW_ALPN.to_vec()])
            .bind()
            .await
            .context("bind")?;
        tokio::time::timeout(LONG, ep.online()).await.context("never reached the relay")?;
        anyhow::Ok(ep)
    };
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (to_ns, url2, file) = (to_ns.to_string(), url.clone(), file.to_path_buf());
    let receiver = std::thread::spawn(move || {
        on_ns_thread(&to_ns, move || -> Result<u64> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let ep = relay(b, url2).await?;
                let _ = ready_tx.send(());
                let n = crate::transfer::raw_receive(&ep, Some(&file)).await?;
                ep.close().await;
                anyhow::Ok(n)
            })
        })?
    });
    ready_rx.recv_timeout(LONG).context("the receiver never reached the relay")?;
    let (from_ns, url3) = (from_ns.to_string(), url.clone());
    let took = on_ns_thread(&from_ns, move || -> Result<Duration> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let ep = relay(a, url3.clone()).await?;
            let addr = EndpointAddr::from_parts(to, [TransportAddr::Relay(url3)]);
            let conn = ep.connect(addr, RAW_ALPN).await?;
            let start = Instant::now();
            let (send, _) = crate::transfer::raw_send(&conn, bytes).await?;
            send.stopped().await?;
            let _ = conn.closed().await;
            let took = start.elapsed();
            ep.close().await;
            anyhow::Ok(took)
        })
    })??;
    let got = receiver.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    if got != bytes {
        bail!("the raw stream moved {got} of {bytes} bytes");
    }
    Ok(took)
}

/// Runs the benchmark: `rounds` of each, alternating.
pub fn run(kith: &Path, mib: u64, rounds: usize) -> Result<RelayFigures> {
    let bytes = mib << 20;
    let mut net = Testnet::new(kith, 3, Layout::Namespaces)?;
    net.split_lan(2, LinkShape { mbit: 10_000, loss_permille: 0 })?;
    let up = net.add_uplink(0)?;
    net.lan().context("namespaces")?.set_link(false)?;
    let url = format!("http://{up}:{PORT}");
    let relay: iroh::RelayUrl = url.parse()?;
    net.nodes[0].up_args.extend(["--serve-relay".to_string(), format!("{up}:{PORT}")]);
    for i in 1..3 {
        net.nodes[i].up_args.extend(["--relay".to_string(), url.clone()]);
    }
    net.kith_ok(0, &["init"])?;
    net.kith_ok(1, &["init"])?;
    net.share_identity(2, 1)?;
    net.start(0)?;
    net.start(1)?;
    // The relay's node lets the person's two devices in.
    let ticket = |net: &Testnet, i: usize| -> Result<String> {
        Ok(net.kith_ok(i, &["id", "--ticket"])?.trim().to_string())
    };
    let t1 = ticket(&net, 1)?;
    net.kith_ok(0, &["peer", "add", &t1])?;
    let node2: iroh::EndpointId = net.id(2)?.parse().context("node 2's id")?;
    let node2 = kith_node::net::ticket::NodeTicket {
        id: node2,
        addrs: vec![(net.lan().context("namespaces")?.ip(2), 7781).into()],
    };
    net.kith_ok(0, &["peer", "add", &node2.to_string()])?;
    let mut objects = Vec::new();
    for r in 0..rounds {
        let src = net.dir().join(format!("object-{r}.bin"));
        crate::transfer::write_random_seeded(&src, bytes, 40 + r as u64)?;
        let put = net.json(1, &["put", src.to_str().context("path")?])?;
        objects.push(put["id"].as_str().context("put id")?.to_string());
    }
    net.kith_ok(2, &["peer", "add", &t1])?;
    let started = Instant::now();
    net.start(2)?;
    let id1 = net.id(1)?;
    net.wait_for(LONG, "the LAN 2 device to reach the LAN 1 device through the relay", |net| {
        Ok(net.peers(2)?.iter().any(|p| p["id"] == id1.as_str() && p["state"] == "reachable"))
    })?;
    let reach = started.elapsed();
    eprintln!("relay-bench: the LAN 2 device reached the LAN 1 device in {reach:?}");
    let before = relayed(&net)?;
    let (ns1, ns2) = {
        let lan = net.lan().context("namespaces")?;
        (lan.ns(1).to_string(), lan.ns(2).to_string())
    };
    let admit = |ids: &[iroh::EndpointId]| -> Result<()> {
        for id in ids {
            let t = kith_node::net::ticket::NodeTicket {
                id: *id,
                addrs: vec![([10, 97, 0, 9], 1).into()],
            };
            net.kith_ok(0, &["peer", "add", &t.to_string()])?;
        }
        Ok(())
    };
    let (mut raw, mut get, mut moved) = (Vec::new(), Vec::new(), 0u64);
    for (r, object) in objects.iter().enumerate() {
        let file = net.dir().join(format!("raw-{r}.bin"));
        raw.push(raw_through_relay(&ns1, &ns2, &relay, bytes, &file, &admit)?);
        let _ = std::fs::remove_file(&file);
        let out = net.dir().join(format!("got-{r}.bin"));
        let t = Instant::now();
        net.kith_ok(2, &["get", object, "-o", out.to_str().context("path")?])?;
        get.push(t.elapsed());
        moved += bytes;
        let _ = std::fs::remove_file(&out);
    }
    let after = relayed(&net)?;
    let mbps = |d: &[Duration]| bytes as f64 / 1e6 / median(d.to_vec()).as_secs_f64();
    let (raw_mbps, get_mbps) = (mbps(&raw), mbps(&get));
    Ok(RelayFigures {
        bench: "relay",
        mib,
        rounds,
        raw_relay_mbps: round(raw_mbps, 1),
        get_relay_mbps: round(get_mbps, 1),
        get_over_raw_relay: round(get_mbps / raw_mbps, 3),
        reach_s: round(reach.as_secs_f64(), 2),
        // Raw streams moved as much again through it.
        relayed_over_moved: round((after - before) as f64 / (2 * moved) as f64, 3),
    })
}

/// The bytes the relay on node 0 says it carried this month.
fn relayed(net: &Testnet) -> Result<u64> {
    net.json(0, &["status"])?["relay"]["relayed_bytes"].as_u64().context("no relay status")
}

/// The figures as markdown, then the JSON line.
pub fn markdown(f: &RelayFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} MiB through a member's relay, {} rounds | MB/s |", f.mib, f.rounds);
    let _ = writeln!(s, "| --- | ---: |");
    let _ = writeln!(s, "| raw iroh stream through the relay, to a file | {} |", f.raw_relay_mbps);
    let _ = writeln!(s, "| `kith get` through the relay | {} |", f.get_relay_mbps);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "kith over raw iroh through the relay: {}; the LAN 2 device reaches the LAN 1 device {} s after it starts; the relay counted {}x the bytes moved.",
        f.get_over_raw_relay, f.reach_s, f.relayed_over_moved
    );
    s
}
