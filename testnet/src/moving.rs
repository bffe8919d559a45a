//! Moving between pools (`kith move`): a member's object moved from one pool of 3 nodes to
//! another, against a plain `put --pool` of the same amount of data into the destination, with
//! the bytes the nodes sent for each.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::figures::round;
use crate::net::{Layout, Testnet};

const LONG: Duration = Duration::from_secs(600);

/// What the move benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct MoveFigures {
    /// `"move"`.
    pub bench: &'static str,
    /// Object size (MiB).
    pub mib: u64,
    /// `put --pool B` of a fresh object of that size, holders acknowledged (s).
    pub put_s: f64,
    /// `kith move --from A --to B` of the object, released in A (s).
    pub move_s: f64,
    /// Put time over move time (the goal, move under 1.5x the put, is this above 0.67).
    pub put_over_move: f64,
    /// Blob bytes all nodes sent during the put (MB).
    pub put_sent_mb: f64,
    /// Blob bytes all nodes sent during the move (MB).
    pub move_sent_mb: f64,
    /// From the move's end to A's holders having reclaimed the object's space (s).
    pub reclaimed_after_s: f64,
}

fn served(net: &Testnet, n: usize) -> Result<u64> {
    (0..n).map(|i| Ok(net.json(i, &["status"])?["served"]["bytes"].as_u64().unwrap_or(0))).sum()
}

fn stored(net: &Testnet, i: usize) -> Result<u64> {
    net.json(i, &["status"])?["store"]["bytes"].as_u64().context("store bytes")
}

/// Two pools of 3 nodes, A (nodes 0, 1, 2) and B (nodes 0, 3, 4), 2 replicas each; node 0 is
/// the member that moves, and offers no storage, so every copy crosses the network.
pub fn run(kith: &Path, mib: u64) -> Result<MoveFigures> {
    let bytes = mib << 20;
    let mut net = Testnet::new(kith, 5, Layout::Loopback)?;
    for i in 0..5 {
        net.kith_ok(i, &["init"])?;
        net.start(i)?;
    }
    for (pool, holders) in [("a", [1, 2]), ("b", [3, 4])] {
        net.kith_ok(0, &["pool", "create", pool, "--replicas", "2"])?;
        for i in holders {
            let t = net.kith_ok(0, &["pool", "invite", pool])?;
            net.kith_ok(i, &["pool", "join", t.trim()])?;
            net.kith_ok(i, &["offer", pool, "--storage", "10GiB", "--zone", &format!("z{i}")])?;
        }
    }
    net.wait_for(LONG, "both pools' offers to reach node 0", |net| {
        Ok(["a", "b"].iter().all(|p| {
            net.json(0, &["pool", "show", p])
                .is_ok_and(|v| v["capacity"]["offered"] == 2u64 * (10 << 30))
        }))
    })?;
    let moved = net.dir().join("moved.bin");
    let fresh = net.dir().join("fresh.bin");
    crate::transfer::write_random_seeded(&moved, bytes, 11)?;
    crate::transfer::write_random_seeded(&fresh, bytes, 12)?;
    let put = net.json(0, &["put", moved.to_str().context("path")?, "--pool", "a"])?;
    if put["pool"]["complete"] != true {
        bail!("the put into pool a was incomplete: {put}");
    }
    let a_held = stored(&net, 1)? + stored(&net, 2)?;

    crate::transfer::settle()?;
    let before = served(&net, 5)?;
    let t = Instant::now();
    let put = net.json(0, &["put", fresh.to_str().context("path")?, "--pool", "b"])?;
    let put_s = t.elapsed().as_secs_f64();
    if put["pool"]["complete"] != true {
        bail!("the put into pool b was incomplete: {put}");
    }
    let put_sent = served(&net, 5)? - before;
    eprintln!("put --pool b: {put_s:.2} s");

    crate::transfer::settle()?;
    let before = served(&net, 5)?;
    let t = Instant::now();
    let m = net.json(0, &["move", "--from", "a", "--to", "b"])?;
    let move_s = t.elapsed().as_secs_f64();
    let move_sent = served(&net, 5)? - before;
    if m["objects"] != 1 || m["copies"] != 2 {
        bail!("the move did not place the object with 2 copies: {m}");
    }
    eprintln!("move a -> b: {move_s:.2} s");
    let t = Instant::now();
    net.wait_for(LONG, "pool a's holders to reclaim the space", |net| {
        Ok(stored(net, 1)? + stored(net, 2)? + (bytes / 2) < a_held)
    })?;
    let reclaimed = t.elapsed().as_secs_f64();
    let s3 = |x: f64| round(x, 3);
    Ok(MoveFigures {
        bench: "move",
        mib,
        put_s: s3(put_s),
        move_s: s3(move_s),
        put_over_move: s3(put_s / move_s),
        put_sent_mb: round(put_sent as f64 / 1e6, 1),
        move_sent_mb: round(move_sent as f64 / 1e6, 1),
        reclaimed_after_s: s3(reclaimed),
    })
}

/// A markdown summary.
pub fn markdown(f: &MoveFigures) -> String {
    let mut out = String::new();
    let _ =
        writeln!(out, "| {} MiB, pools of 3 nodes, 2 replicas, loopback | s | MB sent |", f.mib);
    let _ = writeln!(out, "| --- | ---: | ---: |");
    let _ = writeln!(out, "| put --pool B (fresh data) | {:.2} | {:.0} |", f.put_s, f.put_sent_mb);
    let _ = writeln!(out, "| move --from A --to B | {:.2} | {:.0} |", f.move_s, f.move_sent_mb);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Move / put: {:.2}x the time. Pool A's holders reclaimed the space {:.1} s after the move.",
        f.move_s / f.put_s,
        f.reclaimed_after_s
    );
    out
}
