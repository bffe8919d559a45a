//! `kith job run`: a WebAssembly job on this node, or on the pool's nodes with their answers
//! compared (docs/compute.md).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use kith_compute::jobs::{self, JobReply, JobRequest};
use kith_compute::{FUEL_PER_CPU_SECOND, Limits, MAX_MODULE, Sandbox};
use kith_crdt::hex;
use minicbor::bytes::ByteVec;
use serde_json::Value;

use crate::api::jobs::{JobDone, JobRun, JobRunner};
use crate::ops::{Ctx, answer};
use crate::wire::{Frame, Out};

/// Most bytes of input a job sent to the pool carries (its files and standard input).
pub const MAX_INPUT: u64 = 64 << 20;

fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let len =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if len > max {
        bail!("{what} {} is {len} bytes; a job takes at most {max}", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A file, or the files under a folder, as (path under `/input`, bytes).
fn input_files(path: &Path) -> Result<Vec<(String, ByteVec)>> {
    fn walk(
        dir: &Path,
        rel: &str,
        out: &mut Vec<(String, ByteVec)>,
        total: &mut u64,
    ) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let t = e.file_type()?;
            if t.is_dir() {
                walk(&e.path(), &r, out, total)?;
            } else if t.is_file() {
                let data = read_bounded(&e.path(), MAX_INPUT, "the input")?;
                *total += data.len() as u64;
                if *total > MAX_INPUT {
                    bail!("the input is over {MAX_INPUT} bytes; a job takes at most that");
                }
                out.push((r, data.into()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        walk(path, "", &mut out, &mut 0)?;
    } else {
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or("input".into());
        out.push((name, read_bounded(path, MAX_INPUT, "the input")?.into()));
    }
    Ok(out)
}

/// Writes a result's files under `out` (which must not exist).
fn write_result(out: &Path, files: &[(String, ByteVec)]) -> Result<()> {
    std::fs::create_dir(out)
        .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
    for (rel, data) in files {
        let r = jobs::safe_relative(rel)
            .ok_or_else(|| anyhow!("the result names a bad path `{}`", rel.escape_default()))?;
        let to = out.join(r);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&to, data.as_slice())?;
    }
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, r: JobRun, out: &Out) -> Result<Value> {
    let module = read_bounded(&r.module, MAX_MODULE as u64, "the module")?;
    let input = match &r.input {
        Some(p) => input_files(p)?,
        None => Vec::new(),
    };
    let stdin = match &r.stdin {
        Some(p) => Some(read_bounded(p, MAX_INPUT, "standard input")?.into()),
        None => None,
    };
    let memory = kith_pools::parse_size(&r.memory).map_err(|e| anyhow!(e))?;
    if r.out.exists() {
        bail!("{} exists: the result goes into a new folder", r.out.display());
    }
    let fuel = r.fuel.unwrap_or(Limits::default().fuel);
    let mut req = JobRequest {
        pool: [0; 32],
        module: module.into(),
        args: r.args.clone(),
        env: r.env.clone(),
        input,
        stdin,
        seed: [0; 32],
        fuel,
        memory,
    };
    // The seed is the job's own: the same job gets the same random bytes on every runner.
    req.seed = *blake3::Hasher::new_derive_key("kith job seed v1")
        .update(&minicbor::to_vec(&req).expect("a Vec takes any CBOR"))
        .finalize()
        .as_bytes();
    let (reply, runners) = match &r.pool {
        None => {
            out.send(Frame::Stage("running here".into())).await;
            let tmp = ctx.home.root().join("tmp");
            std::fs::create_dir_all(&tmp)?;
            let sandbox = Sandbox::new()?;
            let dir = tempfile::Builder::new().prefix("job-").tempdir_in(&tmp)?;
            let job_req = req.clone();
            let d = dir.path().to_path_buf();
            let reply =
                tokio::task::spawn_blocking(move || local_run(&sandbox, &job_req, &d)).await??;
            (reply, Vec::new())
        }
        Some(spec) => {
            let pools = ctx.pools.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
            let node = ctx.node.as_ref().ok_or_else(|| {
                anyhow!("a job runs on the pool's nodes through this node: start it with `kith up`")
            })?;
            req.pool = pools.resolve(spec)?;
            if r.redundancy == 0 || r.redundancy > 16 {
                bail!("--redundancy is 1 to 16, not {}", r.redundancy);
            }
            out.send(Frame::Stage(format!("running on {} member node(s)", r.redundancy))).await;
            let run =
                jobs::run_in_pool(node, pools, ctx.jobs.as_deref(), &req, r.redundancy as usize)
                    .await
                    .map_err(|e| anyhow!(e))?;
            // What the run found of each runner goes into this member's records of them
            // (their reputation), once a result was accepted.
            let found = jobs::verdicts(&run, &pools.node());
            if !found.is_empty() {
                let pool = hex(&req.pool);
                let now = pools.now_ms();
                if let Err(e) =
                    pools.with_pool(&pool, |p| p.record_checks(pools.signer(), &found, now))
                {
                    tracing::warn!(error = %e, "cannot record the runners' answers");
                }
            }
            // The CPU the agreeing runners gave goes into the ledger, with a receipt for each.
            if let Some(ag) = &run.agreed {
                let runs: Vec<(kith_crdt::Key, u64)> = run
                    .answers
                    .iter()
                    .filter_map(|a| match &a.reply {
                        Ok(r @ JobReply::Ran { fuel, .. }) if jobs::same(ag, r) => {
                            Some((a.node, *fuel))
                        }
                        _ => None,
                    })
                    .collect();
                if let Err(e) = pools.record_cpu_taken(&req.pool, &run.id, &runs) {
                    tracing::warn!(error = %e, "cannot record the job's CPU in the ledger");
                }
            }
            let agreed = run.agreed.clone();
            let runners: Vec<JobRunner> = run
                .answers
                .iter()
                .map(|a| JobRunner {
                    node: hex(&a.node),
                    answer: match &a.reply {
                        Err(e) => e.to_string(),
                        Ok(JobReply::Refused(why)) => format!("refused: {why}"),
                        Ok(rep) => match &agreed {
                            Some(ag) if jobs::same(ag, rep) => "agreed".into(),
                            _ => match rep {
                                JobReply::Failed(why) => format!("failed: {why}"),
                                _ => "disagreed".into(),
                            },
                        },
                    },
                    wall_ms: match &a.reply {
                        Ok(JobReply::Ran { wall_ms, .. }) => *wall_ms,
                        _ => 0,
                    },
                })
                .collect();
            match agreed {
                Some(reply) => (reply, runners),
                None => {
                    let said: Vec<String> = runners
                        .iter()
                        .map(|x| format!("{}: {}", &x.node[..10], x.answer))
                        .collect();
                    bail!(
                        "the runners did not agree {} times on a result ({}); nothing was kept",
                        r.redundancy,
                        said.join("; ")
                    );
                }
            }
        }
    };
    let (exit, fuel, hash, files) = match reply {
        JobReply::Ran { exit, fuel, hash, files, .. } => (exit, fuel, hash, files),
        JobReply::Failed(why) => bail!("{why}"),
        JobReply::Refused(why) => bail!("the job was not run: {why}"),
    };
    write_result(&r.out, &files)?;
    let store = ctx.store.clone();
    let o = r.out.clone();
    let put = tokio::task::spawn_blocking(move || store.put(&o, None)).await??;
    answer(JobDone {
        id: hex(&req.id()),
        hash: hex(&hash),
        exit,
        fuel,
        cpu_seconds: fuel as f64 / FUEL_PER_CPU_SECOND as f64,
        files: files.len() as u64,
        bytes: files.iter().map(|(_, d)| d.len() as u64).sum(),
        out: r.out.display().to_string(),
        object: put.id.to_string(),
        runners,
    })
}

/// Runs the job here, without the network (its files written under `dir`), as a runner would.
fn local_run(sandbox: &Sandbox, req: &JobRequest, dir: &Path) -> Result<JobReply> {
    match jobs::run_materialised(sandbox, req, dir) {
        Ok((ran, files)) => Ok(JobReply::Ran {
            exit: ran.exit,
            fuel: ran.fuel,
            hash: ran.hash,
            files,
            wall_ms: ran.wall.as_millis() as u64,
            sig: Vec::new().into(),
        }),
        Err(kith_compute::ComputeError::Host(why)) => {
            Err(anyhow!("cannot run the job here: {why}"))
        }
        Err(e @ kith_compute::ComputeError::TimedOut(_)) => Err(anyhow!(e)),
        Err(e) => Ok(JobReply::Failed(e.to_string())),
    }
}
