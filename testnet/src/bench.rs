//! kith against restic on the reference dataset, in the same run, on the same data.
//!
//! Each round, for each tool (alternating which goes first): copy v1 into a work folder and
//! store it; turn the work folder into v2 with `rsync` (unchanged files keep their inode and
//! times, as on a real disk between two backups) and store it again; restore both versions and
//! check every file against the dataset's checksums (first round). Figures are medians.
//!
//! Each round runs on a journaled ext4 made fresh for it, in memory (a loop file in
//! `/dev/shm`), unless asked to run in place: on an ext4 without a journal, every file created
//! after a mass delete skips the inodes deleted in the last minutes one buffer lookup at a time
//! (`recently_deleted`), so restores of 87 000 files measured how long ago the previous round's
//! folders were deleted (3 s to 16 s for the same restore); and a loop file on the disk made
//! the next step wait for the write-back of the last one. The figures are the tools' work on
//! ext4, not this machine's disk. See docs/benchmarks.md, "Store".

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::figures::round;
use crate::proc::{dir_bytes, file_bytes, have, median, run, timed, warm};

/// Where the data and the tools are.
#[derive(Debug, Clone)]
pub struct StoreBench {
    /// Folder with `v1/`, `v2/`, `v1.sha256`, `v2.sha256` (from make-dataset.sh).
    pub data: PathBuf,
    /// The kith binary.
    pub kith: PathBuf,
    /// Scratch space for work folders, stores and restores.
    pub scratch: PathBuf,
    /// Rounds.
    pub runs: usize,
    /// Runs every round in `scratch` itself instead of on a fresh file system (no root needed).
    pub in_place: bool,
}

/// One tool's figures for one round.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// First store of v1.
    pub put_v1: Duration,
    /// Second store, of v2, over v1.
    pub put_v2: Duration,
    /// Restore of the latest version (v2).
    pub get_v2: Duration,
    /// Restore of the first version (v1).
    pub get_v1: Duration,
    /// Listing the files of v2 (`kith ls`, `restic ls`).
    pub ls_v2: Duration,
    /// What changed from v1 to v2 (`kith diff`, `restic diff`).
    pub diff: Duration,
    /// Store size after v1.
    pub size_v1: u64,
    /// Store size after v1 and v2.
    pub size_v2: u64,
}

/// Figures of both tools over all rounds.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// kith's rounds.
    pub kith: Vec<Round>,
    /// restic's rounds.
    pub restic: Vec<Round>,
    /// Bytes in v1 and v2.
    pub bytes: (u64, u64),
    /// `restic version`.
    pub restic_version: String,
}

/// The figures of [`Report`] as a benchmark's JSON line (medians; MB/s over the dataset's file
/// bytes; see [`figures`](crate::figures)).
#[derive(Debug, Clone, Serialize)]
pub struct StoreFigures {
    /// `"store"`.
    pub bench: &'static str,
    /// Rounds.
    pub rounds: usize,
    /// Bytes in the files of v1.
    pub v1_bytes: u64,
    /// Bytes in the files of v2.
    pub v2_bytes: u64,
    /// kith: first put, of v1 (MB/s).
    pub put_v1_mbps: f64,
    /// kith: incremental put, of v2 (MB/s).
    pub put_v2_mbps: f64,
    /// kith: restore of v2 (MB/s).
    pub restore_v2_mbps: f64,
    /// kith: restore of v1 (MB/s).
    pub restore_v1_mbps: f64,
    /// restic: first backup (MB/s).
    pub restic_put_v1_mbps: f64,
    /// restic: incremental backup (MB/s).
    pub restic_put_v2_mbps: f64,
    /// restic: restore of v2 (MB/s).
    pub restic_restore_v2_mbps: f64,
    /// restic: restore of v1 (MB/s).
    pub restic_restore_v1_mbps: f64,
    /// First put: kith's throughput over restic's.
    pub put_v1_over_restic: f64,
    /// Incremental put: kith's throughput over restic's.
    pub put_v2_over_restic: f64,
    /// Restore of v2: kith's throughput over restic's.
    pub restore_v2_over_restic: f64,
    /// `ls` of v2: restic's time over kith's.
    pub ls_over_restic: f64,
    /// `diff` of v1 and v2: restic's time over kith's.
    pub diff_over_restic: f64,
    /// Restore of v1: kith's throughput over restic's.
    pub restore_v1_over_restic: f64,
    /// kith's store after v1 (MB).
    pub store_v1_mb: f64,
    /// kith's store after v1 and v2 (MB).
    pub store_v2_mb: f64,
    /// kith's store over restic's repository after v1 (lower is better).
    pub store_v1_size_ratio: f64,
    /// kith's store over restic's repository after v1 and v2.
    pub store_v2_size_ratio: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Kith,
    Restic,
}

impl StoreBench {
    /// Runs the rounds.
    pub fn run(&self) -> Result<Report> {
        for tool in ["restic", "rsync", "sha256sum"] {
            if !have(tool) {
                bail!("{tool} is missing: apt-get install restic rsync coreutils");
            }
        }
        for v in ["v1", "v2"] {
            if !self.data.join(v).is_dir() {
                bail!(
                    "{} has no {v}/: build the dataset with make-dataset.sh",
                    self.data.display()
                );
            }
        }
        std::fs::create_dir_all(&self.scratch)?;
        let mut report = Report {
            bytes: (file_bytes(&self.data.join("v1"))?, file_bytes(&self.data.join("v2"))?),
            restic_version: String::from_utf8_lossy(
                &run(Command::new("restic").arg("version"))?.stdout,
            )
            .trim()
            .into(),
            ..Report::default()
        };
        for i in 0..self.runs {
            let order =
                if i % 2 == 0 { [Tool::Kith, Tool::Restic] } else { [Tool::Restic, Tool::Kith] };
            for tool in order {
                let round = self.round(tool, i == 0, report.bytes.0.max(report.bytes.1))?;
                eprintln!(
                    "round {} {}: {round:?}",
                    i + 1,
                    if tool == Tool::Kith { "kith" } else { "restic" }
                );
                match tool {
                    Tool::Kith => report.kith.push(round),
                    Tool::Restic => report.restic.push(round),
                }
            }
        }
        Ok(report)
    }

    /// One round; `bytes` is the larger version's size.
    fn round(&self, tool: Tool, check: bool, bytes: u64) -> Result<Round> {
        // Dropped (unmounted, deleted) when the round ends. Room for the work copy, the store,
        // two restores and restic's cache.
        let fresh = if self.in_place {
            None
        } else {
            Some(FreshFs::make(&self.scratch, 6 * bytes + (1 << 30))?)
        };
        let at = fresh.as_ref().map_or(self.scratch.as_path(), |f| f.mount.as_path());
        self.round_in(at, tool, check)
    }

    fn round_in(&self, at: &Path, tool: Tool, check: bool) -> Result<Round> {
        let work = at.join("work");
        let store = at.join("store");
        for d in [&work, &store, &at.join("out1"), &at.join("out2")] {
            remove(d)?;
        }
        settle()?;
        run(Command::new("cp").arg("-a").arg(self.data.join("v1")).arg(&work))?;
        warm(&work)?;
        let mut r = Round::default();
        let t = Tools { kith: &self.kith, store: &store, cache: &at.join("restic-cache") };
        r.put_v1 = t.store(tool, &work)?;
        r.size_v1 = dir_bytes(&store)?;
        run(Command::new("rsync")
            .arg("-a")
            .arg("--delete")
            .arg(format!("{}/", self.data.join("v2").display()))
            .arg(&work))?;
        warm(&work)?;
        r.put_v2 = t.store(tool, &work)?;
        r.size_v2 = dir_bytes(&store)?;
        let (out2, out1) = (at.join("out2"), at.join("out1"));
        settle()?;
        let (d2, root2) = t.restore(tool, &work, 2, &out2)?;
        settle()?;
        let (d1, root1) = t.restore(tool, &work, 1, &out1)?;
        r.get_v2 = d2;
        r.get_v1 = d1;
        (r.ls_v2, r.diff) = t.inside(tool, &work)?;
        if check {
            check_sums(&root2, &self.data.join("v2.sha256"))?;
            check_sums(&root1, &self.data.join("v1.sha256"))?;
        }
        Ok(r)
    }
}

struct Tools<'a> {
    kith: &'a Path,
    store: &'a Path,
    cache: &'a Path,
}

impl Tools<'_> {
    fn kith(&self) -> Command {
        let mut c = Command::new(self.kith);
        c.arg("--home").arg(self.store);
        c
    }

    fn restic(&self) -> Command {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "kith-bench")
            .arg("--repo")
            .arg(self.store)
            .arg("--cache-dir")
            .arg(self.cache)
            .arg("-q");
        c
    }

    fn store(&self, tool: Tool, work: &Path) -> Result<Duration> {
        Ok(match tool {
            Tool::Kith => timed(self.kith().arg("put").arg(work))?.1,
            Tool::Restic => {
                if !self.store.join("config").exists() {
                    remove(self.cache)?;
                    run(self.restic().args(["init", "--repository-version", "2"]))?;
                }
                timed(self.restic().arg("backup").arg(work))?.1
            }
        })
    }

    /// restic's snapshot ids, oldest first.
    fn snapshots(&self) -> Result<Vec<String>> {
        let snaps = run(self.restic().args(["snapshots", "--json"]))?;
        let list: serde_json::Value = serde_json::from_slice(&snaps.stdout)?;
        let mut ids: Vec<(String, String)> = list
            .as_array()
            .context("restic snapshots")?
            .iter()
            .map(|s| {
                (
                    s["time"].as_str().unwrap_or("").to_string(),
                    s["id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        ids.sort();
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    /// Lists the files of v2, then what changed from v1 to v2; the time of each.
    fn inside(&self, tool: Tool, work: &Path) -> Result<(Duration, Duration)> {
        Ok(match tool {
            Tool::Kith => {
                let v = |n| format!("{}@{n}", work.display());
                let ls = timed(self.kith().arg("ls").arg(v(2)))?.1;
                (ls, timed(self.kith().arg("diff").arg(v(1)).arg(v(2)))?.1)
            }
            Tool::Restic => {
                let ids = self.snapshots()?;
                let [a, b] = ids.as_slice() else { bail!("restic has {} snapshots", ids.len()) };
                let ls = timed(self.restic().args(["ls", b]))?.1;
                (ls, timed(self.restic().args(["diff", a, b]))?.1)
            }
        })
    }

    /// Restores version `n` (1 or 2) into `out`; returns the time and the restored root.
    fn restore(
        &self,
        tool: Tool,
        work: &Path,
        n: usize,
        out: &Path,
    ) -> Result<(Duration, PathBuf)> {
        Ok(match tool {
            Tool::Kith => {
                let spec = format!("{}@{n}", work.display());
                (timed(self.kith().arg("get").arg(&spec).arg("-o").arg(out))?.1, out.to_path_buf())
            }
            Tool::Restic => {
                let ids = self.snapshots()?;
                let id = ids.get(n - 1).context("missing snapshot")?;
                let took = timed(self.restic().args(["restore", id, "--target"]).arg(out))?.1;
                (took, out.join(work.strip_prefix("/").unwrap_or(work)))
            }
        })
    }
}

/// A journaled ext4 (`mkfs.ext4` defaults, initialised eagerly) on a sparse loop file in
/// `/dev/shm` (memory: about four times the dataset by the end of a round), mounted at
/// `scratch/round`; unmounted and deleted when dropped. Needs root.
struct FreshFs {
    image: PathBuf,
    mount: PathBuf,
}

impl FreshFs {
    fn make(scratch: &Path, bytes: u64) -> Result<Self> {
        let fs = Self {
            image: Path::new("/dev/shm")
                .join(format!("kith-store-bench-{}.img", std::process::id())),
            mount: scratch.join("round"),
        };
        // What an interrupted run left behind.
        fs.unmount();
        std::fs::create_dir_all(&fs.mount)?;
        let file = std::fs::File::create(&fs.image)
            .with_context(|| format!("cannot create {}", fs.image.display()))?;
        file.set_len(bytes)?;
        drop(file);
        // Inode tables and journal written now: left lazy, the kernel zeroes them in the
        // background after mounting, which took the first restore from 0.8 s to 2.9 s.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&fs.image))
        .context("cannot make the round's file system (mkfs.ext4, from e2fsprogs)")?;
        run(Command::new("mount").arg("-o").arg("loop").arg(&fs.image).arg(&fs.mount)).context(
            "cannot mount the round's file system: store-bench needs root for a fresh ext4 \
             per round, or --in-place to run in the scratch folder itself",
        )?;
        Ok(fs)
    }

    fn unmount(&self) {
        let mounted = std::fs::read_to_string("/proc/self/mounts")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == self.mount.to_str()));
        if mounted && let Err(e) = run(Command::new("umount").arg(&self.mount)) {
            eprintln!("store-bench: cannot unmount {}: {e:#}", self.mount.display());
            return;
        }
        if self.image.exists()
            && let Err(e) = std::fs::remove_file(&self.image)
        {
            eprintln!("store-bench: cannot remove {}: {e}", self.image.display());
        }
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Flushes dirty pages, so one step's write-back does not slow the next one down.
fn settle() -> Result<()> {
    run(&mut Command::new("sync"))?;
    Ok(())
}

fn remove(p: &Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

fn check_sums(root: &Path, sums: &Path) -> Result<()> {
    run(Command::new("sha256sum").arg("-c").arg("--quiet").arg(sums).current_dir(root))
        .with_context(|| {
            format!("restored tree {} differs from {}", root.display(), sums.display())
        })?;
    Ok(())
}

type TimeRow = (&'static str, u64, fn(&Round) -> Duration);
type SizeRow = (&'static str, fn(&Round) -> u64);
type InsideRow = (&'static str, fn(&Round) -> Duration);

impl Report {
    /// The figures for the JSON line.
    pub fn figures(&self) -> StoreFigures {
        let secs = |v: &[Round], f: fn(&Round) -> Duration| {
            median(v.iter().map(f).collect()).as_secs_f64()
        };
        let size = |v: &[Round], f: fn(&Round) -> u64| {
            let mut s: Vec<u64> = v.iter().map(f).collect();
            s.sort();
            s.get(s.len() / 2).copied().unwrap_or(0) as f64
        };
        let (b1, b2) = (self.bytes.0 as f64, self.bytes.1 as f64);
        let (k, r) = (&self.kith, &self.restic);
        let mbps = |bytes: f64, s: f64| round(bytes / s / 1e6, 1);
        let over = |f: fn(&Round) -> Duration| round(secs(r, f) / secs(k, f), 3);
        type Time = fn(&Round) -> Duration;
        let (put1, put2, get2, get1): (Time, Time, Time, Time) =
            (|x| x.put_v1, |x| x.put_v2, |x| x.get_v2, |x| x.get_v1);
        type Size = fn(&Round) -> u64;
        let (size1, size2): (Size, Size) = (|x| x.size_v1, |x| x.size_v2);
        StoreFigures {
            bench: "store",
            rounds: k.len(),
            v1_bytes: self.bytes.0,
            v2_bytes: self.bytes.1,
            put_v1_mbps: mbps(b1, secs(k, put1)),
            put_v2_mbps: mbps(b2, secs(k, put2)),
            restore_v2_mbps: mbps(b2, secs(k, get2)),
            restore_v1_mbps: mbps(b1, secs(k, get1)),
            restic_put_v1_mbps: mbps(b1, secs(r, put1)),
            restic_put_v2_mbps: mbps(b2, secs(r, put2)),
            restic_restore_v2_mbps: mbps(b2, secs(r, get2)),
            restic_restore_v1_mbps: mbps(b1, secs(r, get1)),
            put_v1_over_restic: over(put1),
            put_v2_over_restic: over(put2),
            restore_v2_over_restic: over(get2),
            restore_v1_over_restic: over(get1),
            ls_over_restic: over(|x| x.ls_v2),
            diff_over_restic: over(|x| x.diff),
            store_v1_mb: round(size(k, size1) / 1e6, 1),
            store_v2_mb: round(size(k, size2) / 1e6, 1),
            store_v1_size_ratio: round(size(k, size1) / size(r, size1), 3),
            store_v2_size_ratio: round(size(k, size2) / size(r, size2), 3),
        }
    }

    /// A markdown table of medians and ratios.
    pub fn markdown(&self) -> String {
        let mbps = |bytes: u64, d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
        let med = |v: &[Round], f: fn(&Round) -> Duration| median(v.iter().map(f).collect());
        let size = |v: &[Round], f: fn(&Round) -> u64| {
            let mut s: Vec<u64> = v.iter().map(f).collect();
            s.sort();
            s.get(s.len() / 2).copied().unwrap_or(0)
        };
        let (b1, b2) = self.bytes;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| {} rounds, medians | kith | restic | kith / restic |",
            self.kith.len()
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
        let rows: [TimeRow; 4] = [
            ("put v1 (first)", b1, |r| r.put_v1),
            ("put v2 (incremental)", b2, |r| r.put_v2),
            ("restore v2", b2, |r| r.get_v2),
            ("restore v1", b1, |r| r.get_v1),
        ];
        let inside: [InsideRow; 2] =
            [("ls v2 (every file)", |r| r.ls_v2), ("diff v1 v2", |r| r.diff)];
        for (name, bytes, f) in rows {
            let (k, r) = (med(&self.kith, f), med(&self.restic, f));
            let _ = writeln!(
                out,
                "| {name}, MB/s (s) | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.2}x |",
                mbps(bytes, k),
                k.as_secs_f64(),
                mbps(bytes, r),
                r.as_secs_f64(),
                r.as_secs_f64() / k.as_secs_f64()
            );
        }
        for (name, f) in inside {
            let (k, r) = (med(&self.kith, f), med(&self.restic, f));
            let _ = writeln!(
                out,
                "| {name}, s | {:.3} | {:.3} | {:.2}x |",
                k.as_secs_f64(),
                r.as_secs_f64(),
                r.as_secs_f64() / k.as_secs_f64()
            );
        }
        let sizes: [SizeRow; 2] =
            [("store after v1, MB", |r| r.size_v1), ("store after v1 + v2, MB", |r| r.size_v2)];
        for (name, f) in sizes {
            let (k, r) = (size(&self.kith, f), size(&self.restic, f));
            let _ = writeln!(
                out,
                "| {name} | {:.1} | {:.1} | {:.3} |",
                k as f64 / 1e6,
                r as f64 / 1e6,
                k as f64 / r as f64
            );
        }
        let _ = writeln!(out, "\nDataset: v1 {b1} bytes, v2 {b2} bytes. {}.", self.restic_version);
        out
    }
}
