//! Browser benchmark: headless Chromium in one network namespace downloads a file from a node in
//! another over the node's WebRTC data channel; a raw iroh stream moves the same bytes in the
//! same run for comparison.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::net::{Layout, Testnet};
use crate::netns::in_ns;
use crate::proc::median;

/// What the benchmark measured.
#[derive(Debug, Default)]
pub struct BrowserReport {
    /// Bytes per download.
    pub bytes: u64,
    /// From the page's start to the channel open (ms), per run.
    pub open_ms: Vec<f64>,
    /// The download over the channel, checked (ms), per run.
    pub download_ms: Vec<f64>,
    /// Raw iroh on loopback, the same bytes (ms), per run.
    pub iroh_ms: Vec<f64>,
    /// A Rust WebRTC peer (what a node runs) from the other namespace: channel open (ms).
    pub peer_open_ms: Vec<f64>,
    /// Its download of the same file over the channel (ms).
    pub peer_ms: Vec<f64>,
}

/// A Rust peer in `ns` (address `local`) opens a channel to the node's page at `http` and
/// downloads `site/path`; returns (open, download) times and the bytes received.
fn rust_peer(
    ns: &str,
    http: std::net::SocketAddr,
    local: std::net::IpAddr,
) -> Result<(Duration, Duration, u64)> {
    crate::netns::on_ns_thread(ns, move || {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async move {
            use webrtc::data_channel::DataChannelEvent;
            let t = std::time::Instant::now();
            let (pc, dc) = kith_hosting::browser::connect_http(http, local)
                .await
                .map_err(anyhow::Error::msg)?;
            let open = t.elapsed();
            let t = std::time::Instant::now();
            dc.send_text(r#"{"op":"get","site":"bench","path":"big.bin"}"#)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut got = 0u64;
            loop {
                match tokio::time::timeout(Duration::from_secs(60), dc.poll()).await {
                    Ok(Some(DataChannelEvent::OnMessage(m))) if m.is_string => {
                        let v: serde_json::Value = serde_json::from_slice(&m.data)?;
                        match v["op"].as_str() {
                            Some("done") => break,
                            Some("error") => bail!("the node said: {v}"),
                            _ => {}
                        }
                    }
                    Ok(Some(DataChannelEvent::OnMessage(m))) => got += m.data.len() as u64,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => bail!("the channel ended after {got} bytes"),
                }
            }
            let dl = t.elapsed();
            let _ = pc.close().await;
            Ok((open, dl, got))
        })
    })?
}

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `runs` downloads of `mib` MiB.
pub fn run(kith: &Path, mib: u64, runs: usize) -> Result<BrowserReport> {
    let mut net = Testnet::new(kith, 2, Layout::Namespaces)?;
    net.kith_ok(0, &["init"])?;
    net.start(0)?;
    net.kith_ok(0, &["pool", "create", "street"])?;
    net.kith_ok(0, &["offer", "street", "--storage", "10GiB"])?;
    let site = net.dir().join("www");
    std::fs::create_dir_all(&site)?;
    let bytes = mib << 20;
    let data = crate::pseudo_bytes(bytes as usize, 0x2545_f491_4f6c_dd1d);
    std::fs::write(site.join("big.bin"), &data)?;
    drop(data);
    net.kith_ok(0, &["site", "publish", site.to_str().context("path")?, "--name", "bench"])?;
    let phone = net.lan().context("namespaces")?.ns(1).to_string();
    in_ns(&phone, "ip", &["route", "add", "default", "via", "10.99.0.1"])?;
    let mut r = BrowserReport { bytes, ..Default::default() };
    for i in 0..runs {
        let profile = net.dir().join(format!("chromium-{i}"));
        let child = Command::new("ip")
            .args(["netns", "exec", &phone, "chromium", "--headless", "--no-sandbox"])
            .args(["--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("http://10.99.0.1:7780/kith/?get=bench/big.bin")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run chromium (apt-get install chromium)")?;
        let b = Browser(child);
        let mut got = serde_json::Value::Null;
        net.wait_for(Duration::from_secs(300), "the browser's report", |net| {
            let reports = net.json(0, &["status"])?["browsers"]["reports"].clone();
            got = reports.as_array().and_then(|a| a.get(i).cloned()).unwrap_or_default();
            Ok(!got.is_null())
        })?;
        drop(b);
        if got["ok"] != true || got["bytes"] != bytes {
            bail!("download {i} failed: {got}");
        }
        r.open_ms.push(got["open_ms"].as_f64().unwrap_or(0.0));
        r.download_ms.push(got["ms"].as_f64().unwrap_or(0.0));
    }
    for _ in 0..runs {
        let (open, dl, got) = rust_peer(&phone, "10.99.0.1:7780".parse()?, "10.99.0.2".parse()?)?;
        if got != bytes {
            bail!("the Rust peer received {got} of {bytes} bytes");
        }
        r.peer_open_ms.push(open.as_secs_f64() * 1000.0);
        r.peer_ms.push(dl.as_secs_f64() * 1000.0);
    }
    let rt = tokio::runtime::Runtime::new()?;
    for _ in 0..runs {
        let d = rt.block_on(crate::transfer::raw_iroh(bytes, None))?;
        r.iroh_ms.push(d.as_secs_f64() * 1000.0);
    }
    Ok(r)
}

impl BrowserReport {
    /// The figures as a benchmark's JSON line (medians; see [`figures`](crate::figures)).
    pub fn figures(&self) -> serde_json::Value {
        use crate::figures::round;
        let med = |v: &[f64]| {
            let d: Vec<Duration> =
                v.iter().map(|ms| Duration::from_secs_f64(ms / 1000.0)).collect();
            median(d).as_secs_f64() * 1000.0
        };
        let (open, dl, iroh) = (med(&self.open_ms), med(&self.download_ms), med(&self.iroh_ms));
        let (popen, pdl) = (med(&self.peer_open_ms), med(&self.peer_ms));
        serde_json::json!({
            "bench": "browser",
            "mib": self.bytes >> 20,
            "rounds": self.open_ms.len(),
            "browser_open_ms": round(open, 0),
            "browser_download_ms": round(dl, 0),
            "browser_mbps": round(self.bytes as f64 / 1e3 / dl, 1),
            "browser_over_iroh": round(iroh / dl, 3),
            "peer_open_ms": round(popen, 0),
            "peer_download_ms": round(pdl, 0),
            "peer_over_iroh": round(iroh / pdl, 3),
            "iroh_ms": round(iroh, 0),
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let med = |v: &[f64]| {
            let d: Vec<Duration> =
                v.iter().map(|ms| Duration::from_secs_f64(ms / 1000.0)).collect();
            median(d).as_secs_f64() * 1000.0
        };
        let mbs = |ms: f64| self.bytes as f64 / 1e6 / (ms / 1000.0);
        let (open, dl, iroh) = (med(&self.open_ms), med(&self.download_ms), med(&self.iroh_ms));
        let mut s = String::new();
        let _ = writeln!(s, "Medians of {} runs, {} MiB:\n", self.open_ms.len(), self.bytes >> 20);
        let _ = writeln!(s, "| path | channel setup | transfer | throughput | ratio to iroh |");
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
        let _ = writeln!(
            s,
            "| headless Chromium → node, WebRTC data channel (two namespaces, veth) | {open:.0} ms | {dl:.0} ms | {:.1} MB/s | {:.3} |",
            mbs(dl),
            iroh / dl
        );
        let (popen, pdl) = (med(&self.peer_open_ms), med(&self.peer_ms));
        let _ = writeln!(
            s,
            "| Rust WebRTC peer (a node) → node, data channel (two namespaces, veth) | {popen:.0} ms | {pdl:.0} ms | {:.1} MB/s | {:.3} |",
            mbs(pdl),
            iroh / pdl
        );
        let _ = writeln!(
            s,
            "| raw iroh stream, one QUIC stream on loopback | (dial: a few ms) | {iroh:.0} ms | {:.1} MB/s | 1 |",
            mbs(iroh)
        );
        s
    }
}
