//! Federation: two neighbourhoods on two LANs joined by a router that shapes the link to 20
//! Mbit/s and drops 0.5% of packets; pool A (3 nodes, LAN 1) keeps one off-site copy of each
//! chunk at pool B (3 nodes, LAN 2). Measured: the time for A's object to reach B across the
//! link against what the link allows, the bytes that crossed against the bytes that had to;
//! A's public site at B's CDN edge (publish to served there, and a neighbour's page load on
//! LAN 2 from the edge against from A's node across the link); convergence after the link is
//! cut and healed while both sides change; and, once every node of LAN 1 is destroyed, the
//! time for a member restoring on a fresh node of LAN 2 to find the pool and get the object
//! back.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::figures::round;
use crate::net::{Layout, Testnet};
use crate::netns::LinkShape;

const LONG: Duration = Duration::from_secs(1800);
const SHAPE: LinkShape = LinkShape { mbit: 20, loss_permille: 5 };

/// What the federation benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct FedFigures {
    /// `"federation"`.
    pub bench: &'static str,
    /// Object size (MiB).
    pub mib: u64,
    /// The link's rate (Mbit/s) and loss (per thousand).
    pub link_mbit: u32,
    /// Packets dropped per thousand.
    pub link_loss_permille: u32,
    /// From the put's end to the partner's nodes holding the whole off-site copy (s).
    pub offsite_s: f64,
    /// The bytes placed off-site over the link's rate: the least that could take (s).
    pub offsite_ideal_s: f64,
    /// Ideal over measured: the share of the link the off-site copy used.
    pub offsite_link_use: f64,
    /// Bytes that crossed into the partner's LAN while the copy went over (MB).
    pub crossed_mb: f64,
    /// Bytes placed off-site: what had to cross (MB).
    pub placed_mb: f64,
    /// Crossed over placed.
    pub crossed_over_placed: f64,
    /// A restored identity on a fresh node of LAN 2: start to its pool found (s).
    pub recover_s: f64,
    /// Then `kith get` of the object from the partner's copies (s).
    pub restore_s: f64,
    /// The object's bytes over the restore time (MB/s).
    pub restore_mb_s: f64,
    /// Whether the restored bytes equal the put ones.
    pub identical: bool,
    /// Size of the site's larger file (MiB).
    pub site_mib: u64,
    /// From `kith site publish` on LAN 1 to the version served by B's edge on LAN 2 (s).
    pub site_at_edge_s: f64,
    /// A page (the site's index) opened on LAN 2 from the edge: time to its first byte (ms).
    pub site_first_byte_edge_ms: f64,
    /// The same page from A's node across the link (ms).
    pub site_first_byte_origin_ms: f64,
    /// The larger file opened on LAN 2 from the edge (s).
    pub site_file_edge_s: f64,
    /// The same file from A's node across the link (s).
    pub site_file_origin_s: f64,
    /// Origin over edge for the file: how much faster the edge serves it.
    pub edge_speedup: f64,
    /// After the link was cut while both sides changed (a new site version and a 1 MiB
    /// object on A, a new offer on B), from the heal to both converged: the edge serving the
    /// new version, the object's off-site copy held at B, B's new offer seen by B's admin (s).
    pub heal_converge_s: f64,
}

/// A GET of `path` at `addr` with `Host: host`, from namespace `ns`: time to the first byte
/// of the answer and to its end, and the body.
fn timed_get(
    ns: &str,
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> Result<(f64, f64, Vec<u8>)> {
    use std::io::{Read, Write};
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    crate::netns::on_ns_thread(ns, move || -> Result<(f64, f64, Vec<u8>)> {
        let t = Instant::now();
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(req.as_bytes())?;
        let mut first = [0u8; 1];
        s.read_exact(&mut first)?;
        let ttfb = t.elapsed().as_secs_f64();
        let mut buf = first.to_vec();
        s.read_to_end(&mut buf)?;
        let total = t.elapsed().as_secs_f64();
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").context("no head")? + 4;
        if !buf.starts_with(b"HTTP/1.1 200") {
            bail!("{}", String::from_utf8_lossy(&buf[..end]));
        }
        Ok((ttfb, total, buf[end..].to_vec()))
    })?
}

/// Bytes a node holds for partners, as its `.held` files record them (36-byte records: the
/// blob id and its length).
fn held_on_disk(home: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(home.join("pools/offsite")) else { return 0 };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".held"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|b| {
            b.chunks_exact(36)
                .map(|r| u32::from_le_bytes([r[32], r[33], r[34], r[35]]) as u64)
                .sum::<u64>()
        })
        .sum()
}

/// Runs the scenario with an object of `mib` MiB.
pub fn run(kith: &Path, mib: u64) -> Result<FedFigures> {
    let bytes = mib << 20;
    let mut net = Testnet::new(kith, 7, Layout::Namespaces)?;
    net.split_lan(3, SHAPE)?;
    // Hill's node 4 is a CDN edge for street's sites.
    net.nodes[4].up_args.push("--cdn".into());
    for i in 0..6 {
        net.kith_ok(i, &["init"])?;
        net.start(i)?;
    }
    for (admin, pool) in [(0, "street"), (3, "hill")] {
        net.kith_ok(admin, &["pool", "create", pool])?;
        for i in admin + 1..admin + 3 {
            let t = net.kith_ok(admin, &["pool", "invite", pool])?;
            net.kith_ok(i, &["pool", "join", t.trim()])?;
        }
        for i in admin..admin + 3 {
            net.kith_ok(i, &["offer", pool, "--storage", "10GiB", "--zone", &format!("z{i}")])?;
        }
    }
    net.wait_for(LONG, "street's offers to reach its admin", |net| {
        Ok(net.json(0, &["pool", "show", "street"])?["capacity"]["offered"] == 3u64 * (10 << 30))
    })?;
    net.kith_ok(0, &["pool", "set", "street", "replicas", "2"])?;
    let offer = net.kith_ok(0, &["federation", "invite", "street", "--lend-storage", "10GiB"])?;
    net.kith_ok(
        3,
        &["federation", "join", "hill", offer.trim(), "--lend-storage", "10GiB", "--cdn"],
    )?;
    net.kith_ok(0, &["pool", "set", "street", "offsite_replicas", "1"])?;
    let src = net.dir().join("object.bin");
    crate::transfer::write_random_seeded(&src, bytes, 21)?;
    let put = net.json(0, &["put", src.to_str().context("path")?, "--pool", "street"])?;
    let id = put["id"].as_str().context("object id")?.to_string();
    let before = net.lan().context("lan")?.link_bytes()?;
    let t = Instant::now();
    // What placement gives hill (`pool show` asks hill's holders, and its questions cross the
    // link too: asked only until hill's holders are known); then what hill's nodes hold is
    // read off their disks, which sends nothing.
    let mut placed = 0;
    net.wait_for(LONG, "street's node to know hill's holders", |net| {
        let p = &net.json(0, &["pool", "show", "street"])?["offsite"]["partners"][0];
        placed = p["placed_bytes"].as_u64().unwrap_or(0);
        Ok(placed >= bytes)
    })?;
    net.wait_for(LONG, "the off-site copy to reach hill", |net| {
        Ok((3..6).map(|i| held_on_disk(&net.nodes[i].home)).sum::<u64>() >= placed)
    })?;
    let offsite_s = t.elapsed().as_secs_f64();
    let after = net.lan().context("lan")?.link_bytes()?;
    let crossed = after.1 - before.1;
    eprintln!("off-site copy at hill in {offsite_s:.1} s, {crossed} bytes crossed");
    net.wait_for(LONG, "hill to keep a sealed copy of street", |net| {
        Ok((3..6).any(|i| {
            std::fs::read_dir(net.nodes[i].home.join("pools/offsite")).is_ok_and(|rd| {
                rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".sealed"))
            })
        }))
    })?;

    // Street publishes a site (a page and a larger file); hill's edge serves it on LAN 2.
    let site_mib = 4;
    let www = net.dir().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), b"<h1>Street</h1>\n")?;
    crate::transfer::write_random_seeded(&www.join("big.bin"), site_mib << 20, 22)?;
    let phone = net.lan().context("lan")?.ns(5).to_string();
    let ip = |i: usize| -> Result<std::net::SocketAddr> {
        Ok(std::net::SocketAddr::new(net.lan().context("lan")?.ip(i).into(), 7780))
    };
    let (edge, origin) = (ip(4)?, ip(0)?);
    let host = "street-news.local:7780";
    let t = Instant::now();
    net.kith_ok(0, &["site", "publish", www.to_str().context("path")?, "--name", "street-news"])?;
    net.wait_for(LONG, "street's site at hill's edge", |_| {
        Ok(timed_get(&phone, edge, host, "/").is_ok_and(|(_, _, b)| b == b"<h1>Street</h1>\n"))
    })?;
    let site_at_edge_s = t.elapsed().as_secs_f64();
    let big = std::fs::read(www.join("big.bin"))?;
    let (ttfb_edge, _, _) = timed_get(&phone, edge, host, "/")?;
    let (ttfb_origin, _, _) = timed_get(&phone, origin, host, "/")?;
    let (_, file_edge, b1) = timed_get(&phone, edge, host, "/big.bin")?;
    let (_, file_origin, b2) = timed_get(&phone, origin, host, "/big.bin")?;
    if b1 != big || b2 != big {
        bail!("the site's file came back different");
    }
    eprintln!(
        "site at the edge in {site_at_edge_s:.1} s; file {file_edge:.3} s from the edge, {file_origin:.3} s across the link"
    );

    // The link is cut while both sides change; then healed.
    let lan = net.lan().context("lan")?;
    let placed_now = |net: &Testnet| -> Result<(u64, u64)> {
        let p = &net.json(0, &["pool", "show", "street"])?["offsite"]["partners"][0];
        Ok((p["placed_bytes"].as_u64().unwrap_or(0), p["held_bytes"].as_u64().unwrap_or(0)))
    };
    let before_cut = placed_now(&net)?.0;
    lan.set_link(false)?;
    std::fs::write(www.join("index.html"), b"<h1>Street, again</h1>\n")?;
    net.kith_ok(0, &["site", "publish", www.to_str().context("path")?, "--name", "street-news"])?;
    let note = net.dir().join("note.bin");
    crate::transfer::write_random_seeded(&note, 1 << 20, 23)?;
    net.json(0, &["put", note.to_str().context("path")?, "--pool", "street"])?;
    net.kith_ok(5, &["offer", "hill", "--storage", "20GiB", "--zone", "z5"])?;
    let lan = net.lan().context("lan")?;
    lan.set_link(true)?;
    let t = Instant::now();
    // When each part converged (s after the heal).
    let mut parts: [Option<f64>; 3] = [None; 3];
    net.wait_for(LONG, "both sides to converge after the heal", |net| {
        let page = timed_get(&phone, edge, host, "/")
            .is_ok_and(|(_, _, b)| b == b"<h1>Street, again</h1>\n");
        let (placed, held) = placed_now(net)?;
        // The 1 MiB object is about 1.05 MB placed (chunks, tree, manifest): past 1 MB.
        let copied = placed >= before_cut + 1_000_000 && held == placed;
        let offered = net.json(3, &["pool", "show", "hill"])?["capacity"]["offered"]
            == 2u64 * (10 << 30) + (20 << 30);
        for (p, ok) in parts.iter_mut().zip([page, copied, offered]) {
            if ok && p.is_none() {
                *p = Some(t.elapsed().as_secs_f64());
            }
        }
        Ok(page && copied && offered)
    })?;
    let heal_converge_s = t.elapsed().as_secs_f64();
    eprintln!(
        "converged {heal_converge_s:.1} s after the heal (site at the edge {:.1} s, object's copy {:.1} s, offer {:.1} s)",
        parts[0].unwrap_or(0.0),
        parts[1].unwrap_or(0.0),
        parts[2].unwrap_or(0.0)
    );

    let export = net.dir().join("member.age");
    let out =
        net.cmd(0).args(["key", "export"]).arg(&export).env("KITH_PASSPHRASE", "bench").output()?;
    if !out.status.success() {
        bail!("export: {}", String::from_utf8_lossy(&out.stderr));
    }
    for i in 0..3 {
        net.kill(i)?;
    }
    let out = net
        .cmd(6)
        .args(["init", "--import"])
        .arg(&export)
        .arg("--keep-identity-key")
        .env("KITH_PASSPHRASE", "bench")
        .output()?;
    if !out.status.success() {
        bail!("import: {}", String::from_utf8_lossy(&out.stderr));
    }
    let t = Instant::now();
    net.start(6)?;
    net.wait_for(LONG, "the restored identity to find street at hill", |net| {
        Ok(net.json(6, &["pool", "ls"])?.as_array().is_some_and(|a| a.len() == 1))
    })?;
    let recover_s = t.elapsed().as_secs_f64();
    let back = net.dir().join("back.bin");
    let t = Instant::now();
    net.kith_ok(6, &["get", &id, "-o", back.to_str().context("path")?])?;
    let restore_s = t.elapsed().as_secs_f64();
    let identical = crate::pool::files_equal(&src, &back)?;
    let ideal = placed as f64 * 8.0 / (SHAPE.mbit as f64 * 1e6);
    let s3 = |x: f64| round(x, 3);
    Ok(FedFigures {
        bench: "federation",
        mib,
        link_mbit: SHAPE.mbit,
        link_loss_permille: SHAPE.loss_permille,
        offsite_s: s3(offsite_s),
        offsite_ideal_s: s3(ideal),
        offsite_link_use: s3(ideal / offsite_s),
        crossed_mb: round(crossed as f64 / 1e6, 1),
        placed_mb: round(placed as f64 / 1e6, 1),
        crossed_over_placed: s3(crossed as f64 / placed.max(1) as f64),
        recover_s: s3(recover_s),
        restore_s: s3(restore_s),
        restore_mb_s: round(bytes as f64 / 1e6 / restore_s, 1),
        identical,
        site_mib,
        site_at_edge_s: s3(site_at_edge_s),
        site_first_byte_edge_ms: round(ttfb_edge * 1e3, 2),
        site_first_byte_origin_ms: round(ttfb_origin * 1e3, 2),
        site_file_edge_s: s3(file_edge),
        site_file_origin_s: s3(file_origin),
        edge_speedup: round(file_origin / file_edge, 1),
        heal_converge_s: s3(heal_converge_s),
    })
}

/// A markdown summary.
pub fn markdown(f: &FedFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} MiB, street (3 nodes, LAN 1) keeps 1 off-site copy at hill (3 nodes, LAN 2); link {} Mbit/s, {:.1}% loss | figure |",
        f.mib,
        f.link_mbit,
        f.link_loss_permille as f64 / 10.0
    );
    let _ = writeln!(out, "| --- | ---: |");
    let _ = writeln!(out, "| off-site copy complete after the put | {:.1} s |", f.offsite_s);
    let _ = writeln!(
        out,
        "| least the link allows for it | {:.1} s ({:.0}% of the link used) |",
        f.offsite_ideal_s,
        f.offsite_link_use * 100.0
    );
    let _ = writeln!(
        out,
        "| bytes crossed / bytes placed off-site | {:.1} / {:.1} MB ({:.2}x) |",
        f.crossed_mb, f.placed_mb, f.crossed_over_placed
    );
    let _ = writeln!(
        out,
        "| LAN 1 destroyed: restored identity on LAN 2 finds its pool | {:.1} s |",
        f.recover_s
    );
    let _ = writeln!(
        out,
        "| then `kith get` of the object from hill | {:.1} s ({:.0} MB/s) |",
        f.restore_s, f.restore_mb_s
    );
    let _ = writeln!(out, "| restored bytes identical | {} |", f.identical);
    let _ = writeln!(
        out,
        "| street's site published on LAN 1 to served by hill's edge on LAN 2 ({} MiB file) | {:.1} s |",
        f.site_mib, f.site_at_edge_s
    );
    let _ = writeln!(
        out,
        "| a page's first byte on LAN 2: from the edge / from street's node across the link | {:.1} / {:.1} ms |",
        f.site_first_byte_edge_ms, f.site_first_byte_origin_ms
    );
    let _ = writeln!(
        out,
        "| the {} MiB file on LAN 2: from the edge / across the link | {:.3} / {:.3} s (**{:.1}x**) |",
        f.site_mib, f.site_file_edge_s, f.site_file_origin_s, f.edge_speedup
    );
    let _ = writeln!(
        out,
        "| link cut while both sides change, then healed: both converged after | {:.1} s |",
        f.heal_converge_s
    );
    out
}
