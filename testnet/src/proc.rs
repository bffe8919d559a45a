//! Running commands and timing them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `cmd`, fails with its output if it fails, and returns its output and wall time.
pub fn timed(cmd: &mut Command) -> Result<(Output, Duration)> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((out, took))
}

/// Runs `cmd` and fails if it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    timed(cmd).map(|(o, _)| o)
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Bytes used by the files under `dir` (apparent sizes, as `du -sb`).
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let out = run(Command::new("du").arg("-sb").arg(dir))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().and_then(|n| n.parse().ok()).context("cannot parse du output")
}

/// Bytes in the regular files under `dir` (what a tool reads).
pub fn file_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                total += e.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Reads every file under `dir` once and flushes dirty pages, so each tool starts with a warm
/// page cache and no write-back of earlier steps running beside it.
pub fn warm(dir: &Path) -> Result<()> {
    run(Command::new("sh").arg("-c").arg(format!(
        "find '{}' -type f -print0 | xargs -0 cat > /dev/null; sync",
        dir.display()
    )))?;
    Ok(())
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
