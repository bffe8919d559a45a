//! Site benchmark: the kith gateway against nginx serving the same folder, with wrk, in the
//! same run; and the latency of a cold first request whose content must come from a peer.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::net::{Layout, Testnet};

/// One wrk run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// Bytes per second.
    pub bytes_per_s: f64,
}

/// What the benchmark measured.
#[derive(Debug, Default)]
pub struct SiteReport {
    /// Connections and seconds per wrk run.
    pub conns: usize,
    /// Seconds per run.
    pub secs: u64,
    /// Small page: kith, nginx.
    pub small: (Wrk, Wrk),
    /// 5 MiB file: kith, nginx.
    pub big: (Wrk, Wrk),
    /// Cold first request of the small page on a node holding nothing (ms).
    pub cold_small_ms: f64,
    /// Cold first request of the 5 MiB file there (ms).
    pub cold_big_ms: f64,
    /// Bytes of the small page.
    pub small_bytes: usize,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// GET, reading the whole answer; the status and body length.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, usize)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").context("no head")? + 4;
    let status =
        std::str::from_utf8(&buf[..end])?.split(' ').nth(1).context("no status")?.parse()?;
    Ok((status, buf.len() - end))
}

fn parse_duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn parse_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().ok()?;
    Some(
        n * match unit {
            "B" | "" => 1.0,
            "KB" => 1024.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        },
    )
}

/// Runs wrk against `url`.
fn wrk(url: &str, conns: usize, secs: u64) -> Result<Wrk> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", url])
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk {url}: {text}");
    }
    let mut w = Wrk::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("Transfer/sec:") {
            w.bytes_per_s = parse_size(v).unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("99%") {
            w.p99_ms = parse_duration_ms(v).unwrap_or(0.0);
        }
    }
    if l_errors(&text) {
        bail!("wrk saw errors against {url}:\n{text}");
    }
    Ok(w)
}

/// Whether wrk reported non-2xx answers or socket errors other than timeouts at the end.
fn l_errors(text: &str) -> bool {
    text.lines().any(|l| l.contains("Non-2xx or 3xx responses"))
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx(dir: &Path, root: &Path, port: u16) -> Result<Nginx> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  include /etc/nginx/mime.types;\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
               keepalive_requests 1000000;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
               fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
               server {{ listen 127.0.0.1:{port}; root {r}; index index.html; }}\n}}\n",
            d = dir.display(),
            r = root.display()
        ),
    )?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    let child = Command::new("nginx")
        .args(["-c", conf.to_str().context("path")?, "-p", dir.to_str().context("path")?])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run nginx (apt-get install nginx)")?;
    let n = Nginx(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/").is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start (see {}/error.log)", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(n)
}

/// Runs the benchmark: two nodes on loopback; node 0 holds the site, node 1 holds nothing.
pub fn run(kith: &Path, secs: u64, conns: usize) -> Result<SiteReport> {
    let mut net = Testnet::new(kith, 2, Layout::Loopback)?;
    for i in 0..2 {
        net.kith_ok(i, &["init"])?;
        net.start(i)?;
    }
    net.kith_ok(0, &["pool", "create", "street"])?;
    let ticket = net.kith_ok(0, &["pool", "invite", "street"])?;
    net.kith_ok(1, &["pool", "join", ticket.trim()])?;
    net.kith_ok(0, &["offer", "street", "--storage", "10GiB"])?;
    net.kith_ok(0, &["pool", "set", "street", "replicas", "1"])?;
    let site = net.dir().join("site");
    std::fs::create_dir_all(&site)?;
    let para = "<p>Fresh sourdough every morning from the corner bakery; rye on Fridays.</p>\n";
    let page = format!(
        "<!doctype html><html><head><title>Bakery</title></head><body>{}</body></html>\n",
        para.repeat(50)
    );
    std::fs::write(site.join("index.html"), &page)?;
    let big = crate::pseudo_bytes(5 << 20, 1);
    std::fs::write(site.join("big.bin"), &big)?;
    net.kith_ok(0, &["site", "publish", site.to_str().context("path")?, "--name", "bench"])?;
    let addr = |net: &Testnet, i: usize| -> Result<SocketAddr> {
        Ok(net.json(i, &["status"])?["http"].as_str().context("no http")?.parse()?)
    };
    let k1 = addr(&net, 1)?;
    net.wait_for(Duration::from_secs(60), "node 1 to know the site", |net| {
        Ok(net.json(1, &["site", "ls"])?["sites"].as_array().is_some_and(|s| !s.is_empty()))
    })?;
    let mut r = SiteReport { conns, secs, small_bytes: page.len(), ..Default::default() };
    let t = Instant::now();
    let (st, n) = get(k1, "/s/bench/")?;
    r.cold_small_ms = t.elapsed().as_secs_f64() * 1000.0;
    if st != 200 || n != page.len() {
        bail!("cold small page: status {st}, {n} bytes");
    }
    let t = Instant::now();
    let (st, n) = get(k1, "/s/bench/big.bin")?;
    r.cold_big_ms = t.elapsed().as_secs_f64() * 1000.0;
    if st != 200 || n != big.len() {
        bail!("cold 5 MiB file: status {st}, {n} bytes");
    }
    let port = free_port()?;
    let _nginx = nginx(&net.dir().join("nginx"), &site, port)?;
    let ng = format!("http://127.0.0.1:{port}");
    let ks = format!("http://{k1}/s/bench");
    r.small = (wrk(&format!("{ks}/"), conns, secs)?, wrk(&format!("{ng}/"), conns, secs)?);
    r.big =
        (wrk(&format!("{ks}/big.bin"), conns, secs)?, wrk(&format!("{ng}/big.bin"), conns, secs)?);
    Ok(r)
}

impl SiteReport {
    /// The figures as a benchmark's JSON line (see [`figures`](crate::figures)).
    pub fn figures(&self) -> serde_json::Value {
        use crate::figures::round;
        let over = |k: &Wrk, n: &Wrk| if n.rps > 0.0 { round(k.rps / n.rps, 3) } else { 0.0 };
        serde_json::json!({
            "bench": "site",
            "conns": self.conns,
            "secs": self.secs,
            "kith_small_rps": round(self.small.0.rps, 0),
            "nginx_small_rps": round(self.small.1.rps, 0),
            "small_over_nginx": over(&self.small.0, &self.small.1),
            "kith_big_rps": round(self.big.0.rps, 1),
            "nginx_big_rps": round(self.big.1.rps, 1),
            "big_over_nginx": over(&self.big.0, &self.big.1),
            "kith_small_p99_ms": round(self.small.0.p99_ms, 2),
            "kith_big_p99_ms": round(self.big.0.p99_ms, 2),
            "cold_small_ms": round(self.cold_small_ms, 1),
            "cold_big_ms": round(self.cold_big_ms, 1),
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "wrk -t2 -c{} -d{}s, hot content (the second node's edge cache), same machine:\n",
            self.conns, self.secs
        );
        let _ = writeln!(
            s,
            "| request | kith req/s | nginx req/s | ratio | kith p99 | nginx p99 | kith MB/s | nginx MB/s |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (what, (k, n)) in [
            (format!("small page ({} B)", self.small_bytes), self.small),
            ("5 MiB file".to_string(), self.big),
        ] {
            let _ = writeln!(
                s,
                "| {what} | {:.0} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.1} | {:.1} |",
                k.rps,
                n.rps,
                if n.rps > 0.0 { k.rps / n.rps } else { 0.0 },
                k.p99_ms,
                n.p99_ms,
                k.bytes_per_s / 1e6,
                n.bytes_per_s / 1e6
            );
        }
        let _ = writeln!(
            s,
            "\nCold first request on a node holding none of the site (index and content fetched from the publisher's node, verified, decrypted): small page {:.1} ms, 5 MiB file {:.1} ms.",
            self.cold_small_ms, self.cold_big_ms
        );
        s
    }
}
