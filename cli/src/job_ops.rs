//! `kith job run`: a WebAssembly job on this node, or on the pool's nodes with their answers
//! compared (docs/compute.md).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use kith_compute::jobs::{self, JobReply, JobRequest};
use kith_compute::{FUEL_PER_CPU_SECOND, Limits, MAX_MODULE, Sandbox};
use kith_crdt::hex;
use minicbor::bytes::ByteVec;
use serde_json::Value;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::api::jobs::{JobCancelled, JobDone, JobEntry, JobList, JobRun, JobRunner};
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

/// The files of object `spec` of this node's store (restored into a folder of its own, read,
/// and removed): a job's input given as a stored object.
async fn object_files(ctx: &Ctx, spec: &str) -> Result<Vec<(String, ByteVec)>> {
    let store = ctx.store.clone();
    let tmp = ctx.home.root().join("tmp");
    let spec = spec.to_string();
    tokio::task::spawn_blocking(move || {
        let id = store.resolve(&spec, Path::new("/")).map_err(|e| {
            anyhow!("the input `{spec}` is neither a file or folder nor an object of this node's store ({e})")
        })?;
        std::fs::create_dir_all(&tmp)?;
        let dir = tempfile::Builder::new().prefix("job-input-").tempdir_in(&tmp)?;
        // A file object keeps the name it was stored from (as a file given by path does).
        let name = store
            .list()?
            .into_iter()
            .find(|o| o.id == id)
            .and_then(|o| o.source.file_name().map(|n| n.to_os_string()))
            .unwrap_or_else(|| "input".into());
        let dest = dir.path().join(name);
        store.restore(&id, &dest, None)?;
        input_files(&dest)
    })
    .await?
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

/// Jobs this node asked for (the last [`KEPT`] finished ones kept in `jobs.json` of the home),
/// and how to stop the ones running.
#[derive(Debug)]
pub struct JobBook {
    path: std::path::PathBuf,
    entries: std::sync::Mutex<Vec<JobEntry>>,
    cancels: std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>,
    /// What jobs found of their runners, not yet in the pool documents, by pool.
    checks: Arc<std::sync::Mutex<Checks>>,
}

/// Runner checks waiting to be written, by pool.
type Checks = std::collections::BTreeMap<kith_crdt::Key, Vec<(kith_crdt::Key, Result<(), String>)>>;

/// How long checks wait to be written together (a burst of jobs makes one pool change, and
/// no job's answer waits on the pool document's disk).
const CHECKS_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Finished jobs kept in the book.
const KEPT: usize = 100;

impl JobBook {
    /// The book of the home at `root` (empty if it has none or it cannot be read).
    pub fn open(root: &Path) -> JobBook {
        let path = root.join("jobs.json");
        let entries: Vec<JobEntry> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the job book; starting a new one");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        // A job listed as running when the book was last written did not finish.
        let entries = entries
            .into_iter()
            .map(|mut e| {
                if e.state == "running" {
                    e.state = "failed".into();
                    e.error = Some("kith stopped while it ran".into());
                }
                e
            })
            .collect();
        JobBook {
            path,
            entries: std::sync::Mutex::new(entries),
            cancels: Default::default(),
            checks: Default::default(),
        }
    }

    /// Notes what a job in `pool` found of its runners, to be written into this member's
    /// records in the pool document shortly, with any other job's.
    fn note_checks(
        &self,
        pools: &Arc<kith_pools::docs::Pools>,
        pool: kith_crdt::Key,
        found: Vec<(kith_crdt::Key, Result<(), String>)>,
    ) {
        if found.is_empty() {
            return;
        }
        let first = {
            let mut c = self.checks.lock().unwrap_or_else(|p| p.into_inner());
            let first = c.is_empty();
            c.entry(pool).or_default().extend(found);
            first
        };
        if !first {
            return; // a write is already on its way
        }
        let (checks, pools) = (self.checks.clone(), pools.clone());
        tokio::spawn(async move {
            tokio::time::sleep(CHECKS_AFTER).await;
            let _ = tokio::task::spawn_blocking(move || {
                let all = std::mem::take(&mut *checks.lock().unwrap_or_else(|p| p.into_inner()));
                for (pool, found) in all {
                    let now = pools.now_ms();
                    if let Err(e) = pools
                        .with_pool(&hex(&pool), |p| p.record_checks(pools.signer(), &found, now))
                    {
                        tracing::warn!(error = %e, "cannot record the runners' answers");
                    }
                }
            })
            .await;
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JobEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists `e` as running; the token stops it.
    fn begin(&self, e: JobEntry) -> CancellationToken {
        let token = CancellationToken::new();
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(e.id.clone(), token.clone());
        self.lock().push(e);
        token
    }

    /// Ends job `id` as `f` says, and writes the book.
    fn finish(&self, id: &str, f: impl FnOnce(&mut JobEntry)) {
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let mut entries = self.lock();
        if let Some(e) = entries.iter_mut().rev().find(|e| e.id == id && e.state == "running") {
            f(e);
        }
        let finished = entries.iter().filter(|e| e.state != "running").count();
        if finished > KEPT {
            let mut drop = finished - KEPT;
            entries.retain(|e| {
                let old = drop > 0 && e.state != "running";
                if old {
                    drop -= 1;
                }
                !old
            });
        }
        let bytes = serde_json::to_vec(&*entries).expect("entries serialise");
        drop(entries);
        let tmp = self.path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &self.path))
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the job book");
        }
    }

    /// The jobs in the book, newest first.
    pub fn list(&self) -> Vec<JobEntry> {
        let mut v = self.lock().clone();
        v.reverse();
        v
    }

    /// Stops the running jobs whose id starts with `prefix`; how many.
    pub fn cancel(&self, prefix: &str) -> usize {
        let cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        let hits: Vec<&CancellationToken> =
            cancels.iter().filter(|(id, _)| id.starts_with(prefix)).map(|(_, t)| t).collect();
        for t in &hits {
            t.cancel();
        }
        hits.len()
    }
}

pub(crate) async fn run(ctx: &Ctx, r: JobRun, out: &Out) -> Result<Value> {
    let module = read_bounded(&r.module, MAX_MODULE as u64, "the module")?;
    let input = match (&r.input, &r.input_object) {
        (Some(p), _) => input_files(p)?,
        (None, Some(spec)) => object_files(ctx, spec).await?,
        (None, None) => Vec::new(),
    };
    let stdin = match &r.stdin {
        Some(p) => Some(read_bounded(p, MAX_INPUT, "standard input")?.into()),
        None => None,
    };
    let memory = kith_pools::parse_size(&r.memory).map_err(|e| anyhow!(e))?;
    if r.out.exists() {
        bail!("{} exists: the result goes into a new folder", r.out.display());
    }
    if r.pool.is_some() && (r.redundancy == 0 || r.redundancy > 16) {
        bail!("--redundancy is 1 to 16, not {}", r.redundancy);
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
    let pool_name = match (&r.pool, &ctx.pools) {
        (Some(spec), Some(pools)) => {
            req.pool = pools.resolve(spec)?;
            pools.view_of(&req.pool).map(|v| v.charter.name.clone()).unwrap_or(spec.clone())
        }
        (Some(_), None) => bail!("pools are not running"),
        (None, _) => String::new(),
    };
    // The seed is the job's own: the same job gets the same random bytes on every runner.
    req.seed = *blake3::Hasher::new_derive_key("kith job seed v1")
        .update(&minicbor::to_vec(&req).expect("a Vec takes any CBOR"))
        .finalize()
        .as_bytes();
    let id = hex(&req.id());
    let token = ctx.job_book.begin(JobEntry {
        id: id.clone(),
        side: "submitted".into(),
        what: r.module.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        pool: pool_name,
        state: "running".into(),
        started_ms: now_ms(),
        ended_ms: None,
        redundancy: if r.pool.is_some() { r.redundancy } else { 1 },
        runners: Vec::new(),
        hash: None,
        exit: None,
        cpu_seconds: 0.0,
        out: Some(r.out.display().to_string()),
        object: None,
        error: None,
    });
    // Cancelling sets the flag a job run here checks, and drops the pool's connections (their
    // runners stop when the connection closes).
    let flag = Arc::new(AtomicBool::new(false));
    let (t, f) = (token.clone(), flag.clone());
    let watch = tokio::spawn(async move {
        t.cancelled().await;
        f.store(true, Ordering::Relaxed);
    });
    let result = tokio::select! {
        biased;
        _ = token.cancelled() => Err(anyhow!("job {} was cancelled", &id[..16])),
        done = execute(ctx, &r, &req, out, flag) => done,
    };
    watch.abort();
    match &result {
        Ok(done) => ctx.job_book.finish(&id, |e| {
            e.state = "done".into();
            e.ended_ms = Some(now_ms());
            e.runners = done.runners.clone();
            e.hash = Some(done.hash.clone());
            e.exit = Some(done.exit);
            e.cpu_seconds = done.cpu_seconds;
            e.object = Some(done.object.clone());
        }),
        Err(why) => {
            let (state, runners) = match why.downcast_ref::<Disagreed>() {
                Some(d) => ("failed", d.0.clone()),
                None if token.is_cancelled() => ("cancelled", Vec::new()),
                None => ("failed", Vec::new()),
            };
            ctx.job_book.finish(&id, |e| {
                e.state = state.into();
                e.ended_ms = Some(now_ms());
                e.runners = runners;
                e.error = Some(format!("{why:#}"));
            })
        }
    }
    answer(result?)
}

/// `kith job ls`: the jobs asked for here, and those running here for others, newest first.
pub(crate) fn ls(ctx: &Ctx) -> Result<Value> {
    let mut jobs = ctx.job_book.list();
    let running: Vec<JobEntry> = ctx
        .jobs
        .as_ref()
        .map(|j| j.live())
        .unwrap_or_default()
        .into_iter()
        .map(|l| {
            let view = ctx.pools.as_ref().and_then(|p| p.view_of(&l.pool));
            let asker = view
                .as_ref()
                .and_then(|v| v.node_owner(&l.asker).and_then(|m| v.members.get(&m)))
                .map(|m| m.name.clone())
                .unwrap_or_else(|| hex(&l.asker[..8]));
            JobEntry {
                id: hex(&l.id),
                side: "runner".into(),
                what: asker,
                pool: view.map(|v| v.charter.name.clone()).unwrap_or_default(),
                state: "running".into(),
                started_ms: l.started_ms,
                ended_ms: None,
                redundancy: 0,
                runners: Vec::new(),
                hash: None,
                exit: None,
                cpu_seconds: l.fuel as f64 / FUEL_PER_CPU_SECOND as f64,
                out: None,
                object: None,
                error: None,
            }
        })
        .collect();
    jobs.splice(0..0, running);
    answer(JobList { jobs })
}

/// `kith job show ID`.
pub(crate) fn show(ctx: &Ctx, prefix: &str) -> Result<Value> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.len() < 4 {
        bail!("give at least 4 characters of the job's id (`kith job ls` lists them)");
    }
    let v: JobList = serde_json::from_value(ls(ctx)?)?;
    let mut hits: Vec<JobEntry> =
        v.jobs.into_iter().filter(|j| j.id.starts_with(&prefix)).collect();
    match hits.len() {
        0 => bail!("no job {prefix} here (`kith job ls` lists them)"),
        // The same job asked twice: its latest run.
        _ => answer(hits.remove(0)),
    }
}

/// `kith job cancel ID`: stops the jobs asked for here, and those run here for others, whose
/// id starts with `prefix`.
pub(crate) fn cancel(ctx: &Ctx, prefix: &str) -> Result<Value> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.len() < 4 {
        bail!("give at least 4 characters of the job's id (`kith job ls` lists them)");
    }
    let submitted = ctx.job_book.cancel(&prefix) as u64;
    let running_for_others = ctx.jobs.as_ref().map_or(0, |j| j.cancel(&prefix)) as u64;
    if submitted + running_for_others == 0 {
        bail!("no running job {prefix} here (`kith job ls` lists them)");
    }
    answer(JobCancelled { submitted, running_for_others })
}

/// The runners did not agree: what each answered.
#[derive(Debug)]
struct Disagreed(Vec<JobRunner>, String);

impl std::fmt::Display for Disagreed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Disagreed {}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `req` (built from `r`) here or on the pool, and keeps its result.
async fn execute(
    ctx: &Ctx,
    r: &JobRun,
    req: &JobRequest,
    out: &Out,
    cancel: Arc<AtomicBool>,
) -> Result<JobDone> {
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
                tokio::task::spawn_blocking(move || local_run(&sandbox, &job_req, &d, cancel))
                    .await??;
            (reply, Vec::new())
        }
        Some(_) => {
            let pools = ctx.pools.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
            let node = ctx.node.as_ref().ok_or_else(|| {
                anyhow!("a job runs on the pool's nodes through this node: start it with `kith up`")
            })?;
            out.send(Frame::Stage(format!("running on {} member node(s)", r.redundancy))).await;
            let run = jobs::run_in_pool(
                node,
                pools,
                ctx.jobs.as_deref(),
                req,
                r.redundancy as usize,
                Some(cancel),
            )
            .await
            .map_err(|e| anyhow!(e))?;
            // What the run found of each runner goes into this member's records of them
            // (their reputation), and the CPU the agreeing runners gave into the ledger with a
            // receipt for each: bookkeeping, done beside the answer, not before it.
            let found = jobs::verdicts(&run, &pools.node());
            let runs: Vec<(kith_crdt::Key, u64)> = match &run.agreed {
                Some(ag) => run
                    .answers
                    .iter()
                    .filter_map(|a| match &a.reply {
                        Ok(r @ JobReply::Ran { fuel, .. }) if jobs::same(ag, r) => {
                            Some((a.node, *fuel))
                        }
                        _ => None,
                    })
                    .collect(),
                None => Vec::new(),
            };
            pools.count_cpu_taken(&req.pool, &run.id, &runs);
            ctx.job_book.note_checks(pools, req.pool, found);
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
                    let why = format!(
                        "the runners did not agree {} times on a result ({}); nothing was kept",
                        r.redundancy,
                        said.join("; ")
                    );
                    return Err(Disagreed(runners, why).into());
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
    Ok(JobDone {
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
fn local_run(
    sandbox: &Sandbox,
    req: &JobRequest,
    dir: &Path,
    cancel: Arc<AtomicBool>,
) -> Result<JobReply> {
    match jobs::run_materialised(sandbox, req, dir, Some(cancel)) {
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
