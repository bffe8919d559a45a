//! `testnet compute-bench`: one CPU-bound job (xorshift64 folded into FNV-1a, written in
//! WebAssembly text here) run natively, in wasmtime alone (kith's sandbox in this process),
//! through `kith job run` on one node, and on a pool of four nodes with redundancy 2, in the
//! same run; and the time to the first result of a tiny job on that pool.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{Layout, Testnet};

/// The job's figures.
#[derive(Debug, Serialize)]
pub struct ComputeFigures {
    /// `compute`.
    pub bench: &'static str,
    /// Iterations of the loop.
    pub iterations: u64,
    /// Native Rust (s).
    pub native_s: f64,
    /// wasmtime alone, kith's sandbox in this process (s).
    pub wasmtime_s: f64,
    /// `kith job run` on one node, wall time of the command (s).
    pub kith_local_s: f64,
    /// `kith job run --pool --redundancy 2` on four nodes (s).
    pub kith_pool_s: f64,
    /// The same with a tiny job: time to the first (agreed) result (s).
    pub small_pool_s: f64,
    /// Fuel the job burnt.
    pub fuel: u64,
    /// Fuel per second of wasmtime's run (what a reference CPU-second is worth here).
    pub fuel_per_cpu_s: f64,
    /// wasmtime over native (time).
    pub wasmtime_over_native: f64,
    /// kith on one node over wasmtime alone (time; goal under 1.10).
    pub kith_over_wasmtime: f64,
    /// The pool (two runners agreeing) over wasmtime alone (time).
    pub pool_over_wasmtime: f64,
    /// wasmtime alone over kith on one node (speed: higher is better; goal over 0.91).
    pub wasmtime_over_kith: f64,
    /// wasmtime alone over the pool (speed).
    pub wasmtime_over_pool: f64,
}

impl ComputeFigures {
    /// A table for docs/benchmarks.md.
    pub fn markdown(&self) -> String {
        format!(
            "| what | seconds | over wasmtime |\n| --- | ---: | ---: |\n\
             | native Rust | {:.2} | {:.2} |\n| wasmtime alone | {:.2} | 1.00 |\n\
             | `kith job run` on one node | {:.2} | {:.3} |\n\
             | `kith job run --pool --redundancy 2`, 4 nodes | {:.2} | {:.3} |\n\
             | a tiny job on the pool, to its first result | {:.3} | |\n\n\
             {} iterations, {} fuel, {:.3e} fuel per second in wasmtime\n",
            self.native_s,
            1.0 / self.wasmtime_over_native,
            self.wasmtime_s,
            self.kith_local_s,
            self.kith_over_wasmtime,
            self.kith_pool_s,
            self.pool_over_wasmtime,
            self.small_pool_s,
            self.iterations,
            self.fuel,
            self.fuel_per_cpu_s
        )
    }
}

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The job: `iterations` rounds, the 8-byte result on standard output.
pub fn job_wat(iterations: u64) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $x i64) (local $h i64) (local $i i64)
    (local.set $x (i64.const {SEED}))
    (local.set $h (i64.const {FNV_OFFSET}))
    (block $done
      (loop $l
        (br_if $done (i64.ge_u (local.get $i) (i64.const {iterations})))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
        (local.set $h (i64.mul (i64.xor (local.get $h) (local.get $x)) (i64.const {FNV_PRIME})))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $l)))
    (i64.store (i32.const 64) (local.get $h))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))"#
    )
}

/// The same loop in Rust.
pub fn native(iterations: u64) -> u64 {
    let (mut x, mut h) = (SEED, FNV_OFFSET);
    for _ in 0..std::hint::black_box(iterations) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        h = (h ^ x).wrapping_mul(FNV_PRIME);
    }
    h
}

fn wasmtime_run(module: &[u8], dir: &Path) -> Result<(f64, kith_compute::Ran)> {
    let sandbox = kith_compute::Sandbox::new()?;
    let job = kith_compute::Job {
        module,
        args: &[],
        env: &[],
        input: None,
        stdin: None,
        seed: [0; 32],
        limits: kith_compute::Limits {
            fuel: u64::MAX / 2,
            memory: 32 << 20,
            output: 1 << 20,
            wall: Duration::from_secs(3600),
        },
        cancel: None,
    };
    let t = Instant::now();
    let ran = sandbox.run(&job, dir)?;
    Ok((t.elapsed().as_secs_f64(), ran))
}

/// Runs the benchmark with a job sized to take about `seconds` in wasmtime.
pub fn run(kith: &Path, seconds: f64) -> Result<ComputeFigures> {
    let scratch = tempfile::tempdir()?;
    // Calibrate on a short run.
    let probe = 20_000_000;
    let (probe_s, _) = wasmtime_run(job_wat(probe).as_bytes(), &scratch.path().join("probe"))?;
    let iterations = ((probe as f64) * seconds / probe_s.max(1e-3)) as u64;
    let module = job_wat(iterations);
    let t = Instant::now();
    let want = native(iterations);
    let native_s = t.elapsed().as_secs_f64();
    let (wasmtime_s, ran) = wasmtime_run(module.as_bytes(), &scratch.path().join("wasmtime"))?;
    let got = std::fs::read(scratch.path().join("wasmtime/stdout"))?;
    if got != want.to_le_bytes() {
        bail!("wasmtime's result {got:?} is not native's {want:#x}");
    }

    let mut net = Testnet::new(kith, 4, Layout::Loopback)?;
    for i in 0..4 {
        net.kith_ok(i, &["init"])?;
        net.start(i)?;
    }
    net.kith_ok(0, &["pool", "create", "bench", "--as", "n0"])?;
    for i in 1..4 {
        let ticket = net.kith_ok(0, &["pool", "invite", "bench"])?;
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", &format!("n{i}")])?;
    }
    for i in 0..4 {
        net.kith_ok(i, &["offer", "bench", "--cpu", "1", "--memory", "64MiB"])?;
    }
    net.wait_for(Duration::from_secs(60), "every offer at node 0", |net| {
        let v = net.json(0, &["pool", "show", "bench"])?;
        let lending = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["nodes"].as_array().cloned().unwrap_or_default())
            .filter(|n| n["cpu"] == 1)
            .count();
        Ok(lending == 4)
    })?;
    let file = net.dir().join("bench.wat");
    std::fs::write(&file, &module)?;
    let fuel = (ran.fuel * 2).to_string();
    let timed = |net: &Testnet, args: &[&str]| -> Result<f64> {
        let t = Instant::now();
        net.kith_ok(0, args)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let out = net.dir().join("local");
    let kith_local_s = timed(
        &net,
        &[
            "job",
            "run",
            file.to_str().unwrap_or_default(),
            "--memory",
            "32MiB",
            "--fuel",
            &fuel,
            "-o",
            out.to_str().unwrap_or_default(),
        ],
    )?;
    if std::fs::read(out.join("stdout"))? != want.to_le_bytes() {
        bail!("kith's result is not native's");
    }
    let out = net.dir().join("pool");
    let kith_pool_s = timed(
        &net,
        &[
            "job",
            "run",
            file.to_str().unwrap_or_default(),
            "--pool",
            "bench",
            "--redundancy",
            "2",
            "--memory",
            "32MiB",
            "--fuel",
            &fuel,
            "-o",
            out.to_str().unwrap_or_default(),
        ],
    )?;
    if std::fs::read(out.join("stdout"))? != want.to_le_bytes() {
        bail!("the pool's result is not native's");
    }
    let small = net.dir().join("small.wat");
    std::fs::write(&small, job_wat(1000))?;
    let out = net.dir().join("small");
    let small_pool_s = timed(
        &net,
        &[
            "job",
            "run",
            small.to_str().unwrap_or_default(),
            "--pool",
            "bench",
            "--redundancy",
            "2",
            "--memory",
            "32MiB",
            "-o",
            out.to_str().unwrap_or_default(),
        ],
    )?;
    net.stop_all(Duration::from_secs(20))?;
    Ok(ComputeFigures {
        bench: "compute",
        iterations,
        native_s,
        wasmtime_s,
        kith_local_s,
        kith_pool_s,
        small_pool_s,
        fuel: ran.fuel,
        fuel_per_cpu_s: ran.fuel as f64 / wasmtime_s,
        wasmtime_over_native: wasmtime_s / native_s,
        kith_over_wasmtime: kith_local_s / wasmtime_s,
        pool_over_wasmtime: kith_pool_s / wasmtime_s,
        wasmtime_over_kith: crate::figures::round(wasmtime_s / kith_local_s, 3),
        wasmtime_over_pool: crate::figures::round(wasmtime_s / kith_pool_s, 3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_and_native_rust_compute_the_same_thing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, ran) = wasmtime_run(job_wat(12_345).as_bytes(), dir.path()).expect("runs");
        let got = std::fs::read(dir.path().join("stdout")).expect("stdout");
        assert_eq!(got, native(12_345).to_le_bytes());
        assert!(ran.fuel > 12_345);
    }
}
