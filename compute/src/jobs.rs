//! `kith/job/1`: a member's node asks other members' nodes that lend CPU to run a job, and
//! accepts the result when enough of them agree on its hash.
//!
//! The request carries the module, arguments, environment, input files, standard input, the
//! job's seed and its bounds; a runner checks that the asking node belongs to an active member
//! of the pool, that it lends CPU to that pool (and memory enough, within its hours), runs the
//! job on a thread of its own at the lowest priority, and answers with the result's files, its
//! hash and a receipt its node key signs (job id, hash, fuel). Job errors (out of fuel, out of
//! memory, a trap) are results too: every runner of a deterministic job meets the same one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use kith_crdt::{Key, hex};
use kith_node::net::{Node, frame};
use kith_pools::docs::Pools;
use minicbor::bytes::ByteVec;
use minicbor::{Decode, Encode};

use crate::{ComputeError, Job, Limits, Sandbox};

/// The protocol's name.
pub const JOB_ALPN: &[u8] = b"kith/job/1";
/// Largest request: module, inputs and standard input (bytes of CBOR).
pub const MAX_REQUEST: usize = 96 << 20;
/// Largest answer: the result's files.
pub const MAX_REPLY: usize = 96 << 20;
/// How long a runner may take before the asking node stops waiting.
pub const RUN_LIMIT: Duration = Duration::from_secs(3660);
/// Wall time a job may take on a runner (then the runner gives up on it, and says so).
pub const MAX_WALL: Duration = Duration::from_secs(3600);
/// Most fuel a job may ask a runner for: an hour of reference CPU.
pub const MAX_FUEL: u64 = 3600 * crate::FUEL_PER_CPU_SECOND;
/// Requests read at once before they are admitted (each up to [`MAX_REQUEST`]).
const READING: usize = 2;

/// A job, as sent to a runner.
#[derive(Debug, Clone, Encode, Decode)]
pub struct JobRequest {
    /// The pool it runs for.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub pool: Key,
    /// The module.
    #[n(1)]
    pub module: ByteVec,
    /// Arguments.
    #[n(2)]
    pub args: Vec<String>,
    /// Environment.
    #[n(3)]
    pub env: Vec<(String, String)>,
    /// Input files (path under `/input`, bytes).
    #[n(4)]
    pub input: Vec<(String, ByteVec)>,
    /// Standard input.
    #[n(5)]
    pub stdin: Option<ByteVec>,
    /// The seed of its random bytes.
    #[cbor(n(6), with = "minicbor::bytes")]
    pub seed: Key,
    /// Fuel it may burn.
    #[n(7)]
    pub fuel: u64,
    /// Memory it may use (bytes).
    #[n(8)]
    pub memory: u64,
}

impl JobRequest {
    /// The job's id: BLAKE3 of its request (what receipts name).
    pub fn id(&self) -> Key {
        *blake3::hash(&minicbor::to_vec(self).expect("a Vec takes any CBOR")).as_bytes()
    }
}

/// A runner's answer.
#[derive(Debug, Clone, Encode, Decode)]
pub enum JobReply {
    /// It ran: the result, and the runner's receipt.
    #[n(0)]
    Ran {
        /// Exit status.
        #[n(0)]
        exit: i32,
        /// Fuel burnt.
        #[n(1)]
        fuel: u64,
        /// The result's hash.
        #[cbor(n(2), with = "minicbor::bytes")]
        hash: Key,
        /// The result's files (`stdout`, `output/...`).
        #[n(3)]
        files: Vec<(String, ByteVec)>,
        /// Wall time on the runner (ms).
        #[n(4)]
        wall_ms: u64,
        /// The runner node's signature of [`receipt`] (64 bytes).
        #[n(5)]
        sig: ByteVec,
    },
    /// The job failed the same way it would anywhere (fuel, memory, a trap, an import).
    #[n(1)]
    Failed(#[n(0)] String),
    /// This node does not run it (not a member, lends nothing, busy, outside its hours).
    #[n(2)]
    Refused(#[n(0)] String),
}

/// What a runner signs: the pool, the job, the result's hash, its exit status and the fuel
/// it burnt (the job id covers who asked only through the pool: any member may).
pub fn receipt(pool: &Key, job: &Key, hash: &Key, exit: i32, fuel: u64) -> Vec<u8> {
    let mut r = b"kith job receipt v2".to_vec();
    r.extend_from_slice(pool);
    r.extend_from_slice(job);
    r.extend_from_slice(hash);
    r.extend_from_slice(&exit.to_le_bytes());
    r.extend_from_slice(&fuel.to_le_bytes());
    r
}

/// The runner's side.
#[derive(Clone)]
pub struct JobProtocol {
    pools: Arc<Pools>,
    key: iroh::SecretKey,
    sandbox: Sandbox,
    tmp: PathBuf,
    running: Arc<AtomicU64>,
    reading: Arc<tokio::sync::Semaphore>,
    /// Jobs run here since the node started, and their fuel.
    pub ran: Arc<AtomicU64>,
    /// Fuel burnt by them.
    pub fuel: Arc<AtomicU64>,
    /// Jobs this node gave each runner since it started (the asking side's load spreading).
    given: Arc<std::sync::Mutex<std::collections::HashMap<Key, u64>>>,
    /// Jobs running here for other nodes, by a number of their own.
    live: Arc<std::sync::Mutex<std::collections::BTreeMap<u64, LiveJob>>>,
    next: Arc<AtomicU64>,
}

/// A job running on this node for another member's node.
#[derive(Debug, Clone)]
pub struct LiveJob {
    /// The job's id.
    pub id: Key,
    /// The pool it runs for.
    pub pool: Key,
    /// The node that asked.
    pub asker: Key,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// Fuel it may burn.
    pub fuel: u64,
    /// Memory it may use.
    pub memory: u64,
    /// Set to stop it.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl JobProtocol {
    /// The runner of this node (whose key `key` signs its receipts), writing jobs' files
    /// under `tmp`.
    pub fn new(
        pools: Arc<Pools>,
        key: iroh::SecretKey,
        tmp: PathBuf,
    ) -> Result<JobProtocol, ComputeError> {
        Ok(JobProtocol {
            pools,
            key,
            sandbox: Sandbox::new()?,
            tmp,
            running: Default::default(),
            reading: Arc::new(tokio::sync::Semaphore::new(READING)),
            ran: Default::default(),
            fuel: Default::default(),
            given: Default::default(),
            live: Default::default(),
            next: Default::default(),
        })
    }

    /// Whether this node runs `req` for `peer` now, or why not; the slot it takes.
    fn admit(&self, peer: &Key, req: &JobRequest) -> Result<Slot, String> {
        let v = self.pools.view_of(&req.pool).ok_or("this node is in no such pool")?;
        if v.node_owner(peer).is_none() {
            return Err("your node is not a node of an active member of this pool".into());
        }
        let me = self.pools.node();
        let offer = v
            .node_owner(&me)
            .and_then(|m| v.members.get(&m))
            .and_then(|m| m.compute.get(&me))
            .filter(|o| o.cpu > 0)
            .ok_or("this node lends no CPU to this pool")?
            .clone();
        if req.fuel > MAX_FUEL {
            return Err(format!(
                "the job asks for {} fuel; a runner gives at most {MAX_FUEL}",
                req.fuel
            ));
        }
        if req.args.len() > 1024 || req.env.len() > 1024 || req.input.len() > 10_000 {
            return Err(
                "the job has more than 1024 arguments or variables, or 10000 input files".into()
            );
        }
        if req.memory > offer.memory {
            return Err(format!(
                "the job asks for {} bytes of memory; this node lends {}",
                req.memory, offer.memory
            ));
        }
        if let Some((from, to)) = kith_pools::parse_hours(&offer.hours) {
            let hour = local_hour();
            let inside =
                if from < to { hour >= from && hour < to } else { hour >= from || hour < to };
            if !inside {
                return Err(format!("this node runs jobs from {from}h to {to}h only"));
            }
        }
        let n = self.running.fetch_add(1, Ordering::AcqRel);
        if n >= offer.cpu {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(format!("busy: {n} job(s) running, the {} this node lends", offer.cpu));
        }
        Ok(Slot(self.running.clone()))
    }

    /// Whether `peer` may send this node a job at all: a node of an active member of a pool
    /// this node lends CPU to (checked before a byte of the request is read).
    fn may_ask(&self, peer: &Key) -> bool {
        let me = self.pools.node();
        self.pools.holding().iter().any(|(_, v)| {
            v.node_owner(peer).is_some()
                && v.node_owner(&me)
                    .and_then(|m| v.members.get(&m))
                    .and_then(|m| m.compute.get(&me))
                    .is_some_and(|o| o.cpu > 0)
        })
    }

    async fn serve(&self, conn: &Connection) -> Result<(), String> {
        let peer = *conn.remote_id().as_bytes();
        if !self.may_ask(&peer) {
            self.pools.refused(
                &peer,
                "job refused",
                "not a member's node of a pool this node lends CPU to",
            );
            conn.close(1u32.into(), b"this node runs jobs only for the pools it lends CPU to");
            return Ok(());
        }
        let Ok(reading) = self.reading.clone().try_acquire_owned() else {
            conn.close(1u32.into(), b"busy: other jobs are being received");
            return Ok(());
        };
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let req: JobRequest =
            tokio::time::timeout(Duration::from_secs(120), frame::read_max(&mut recv, MAX_REQUEST))
                .await
                .map_err(|_| "no request within 120 s".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("no request")?;
        drop(reading);
        let mut given = None;
        let reply = match self.admit(&peer, &req) {
            Err(why) => {
                self.pools.refused(&peer, "job refused", &why);
                JobReply::Refused(why)
            }
            Ok(slot) => {
                let pool = req.pool;
                // The job stops if the asking node goes away (it no longer wants the answer)
                // or this node's owner cancels it.
                let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    n,
                    LiveJob {
                        id: req.id(),
                        pool,
                        asker: peer,
                        started_ms: self.pools.now_ms(),
                        fuel: req.fuel,
                        memory: req.memory,
                        cancel: cancel.clone(),
                    },
                );
                let (c, watched) = (cancel.clone(), conn.clone());
                let watch = tokio::spawn(async move {
                    watched.closed().await;
                    c.store(true, Ordering::Relaxed);
                });
                let reply = self.run_cancellable(req, Some(cancel)).await;
                watch.abort();
                self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&n);
                drop(slot);
                if let JobReply::Ran { fuel, .. } = &reply {
                    given = Some((pool, *fuel));
                }
                reply
            }
        };
        frame::write_max(&mut send, &reply, MAX_REPLY).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        // The CPU given is counted for the ledger (the asker's receipt is what credits it).
        if let Some((pool, fuel)) = given {
            self.pools.count_cpu_given(&pool, &peer, fuel);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        Ok(())
    }

    /// The jobs running here for other nodes.
    pub fn live(&self) -> Vec<LiveJob> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Stops the jobs running here whose id starts with `prefix` (hex); how many.
    pub fn cancel(&self, prefix: &str) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let hits: Vec<&LiveJob> =
            live.values().filter(|j| hex(&j.id).starts_with(prefix)).collect();
        for j in &hits {
            j.cancel.store(true, Ordering::Relaxed);
        }
        hits.len()
    }

    /// Runs `req` here, on a thread of its own at the lowest priority.
    pub async fn run(&self, req: JobRequest) -> JobReply {
        self.run_cancellable(req, None).await
    }

    /// [`JobProtocol::run`], stopped when `cancel` is set.
    pub async fn run_cancellable(
        &self,
        req: JobRequest,
        cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> JobReply {
        let id = req.id();
        let pool = req.pool;
        // A directory of its own: the same job asked twice runs twice, apart.
        let made = std::fs::create_dir_all(&self.tmp).and_then(|_| {
            tempfile::Builder::new()
                .prefix(&format!("job-{}-", &hex(&id)[..8]))
                .tempdir_in(&self.tmp)
        });
        let dir = match made {
            Ok(d) => d.keep(),
            Err(e) => return JobReply::Refused(format!("cannot run it here: {e}")),
        };
        let sandbox = self.sandbox.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = dir.clone();
        let spawned = std::thread::Builder::new().name("kith-job".into()).spawn(move || {
            lowest_priority();
            let _ = tx.send(run_materialised(&sandbox, &req, &d, cancel));
        });
        let result = match spawned {
            Ok(_) => {
                rx.await.unwrap_or_else(|_| Err(ComputeError::Host("the job's thread died".into())))
            }
            Err(e) => Err(ComputeError::Host(e.to_string())),
        };
        let reply = match result {
            Ok((ran, files)) => {
                self.ran.fetch_add(1, Ordering::Relaxed);
                self.fuel.fetch_add(ran.fuel, Ordering::Relaxed);
                let sig = self.key.sign(&receipt(&pool, &id, &ran.hash, ran.exit, ran.fuel));
                JobReply::Ran {
                    exit: ran.exit,
                    fuel: ran.fuel,
                    hash: ran.hash,
                    files,
                    wall_ms: ran.wall.as_millis() as u64,
                    sig: sig.to_bytes().to_vec().into(),
                }
            }
            Err(ComputeError::Host(why)) => JobReply::Refused(format!("cannot run it here: {why}")),
            Err(e @ ComputeError::TimedOut(_)) => JobReply::Refused(e.to_string()),
            Err(ComputeError::Cancelled) => JobReply::Refused("the job was cancelled".into()),
            Err(e) => JobReply::Failed(e.to_string()),
        };
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
        reply
    }
}

impl std::fmt::Debug for JobProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobProtocol").field("tmp", &self.tmp).finish_non_exhaustive()
    }
}

/// A job running here, counted until dropped.
struct Slot(Arc<AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ProtocolHandler for JobProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        if let Err(e) = self.serve(&conn).await {
            tracing::info!(peer = %peer.fmt_short(), error = %e, "job request failed");
        }
        Ok(())
    }
}

/// The hour of the day on this machine's local clock.
fn local_hour() -> u32 {
    // SAFETY: time(NULL) and localtime_r on a valid pointer to a zeroed tm are sound.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_hour as u32
    }
}

/// Puts this thread at the lowest CPU priority (nice 19): a job never slows the node's other
/// duties.
fn lowest_priority() {
    // SAFETY: gettid has no arguments; setpriority on this thread's id changes only it.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Writes the request's inputs and standard input under `dir`, runs the job with its result
/// under `dir/out`, and reads the result's files.
/// (Also what `kith job run` does for a job run here, without the network.)
#[allow(clippy::type_complexity)]
pub fn run_materialised(
    sandbox: &Sandbox,
    req: &JobRequest,
    dir: &Path,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<(crate::Ran, Vec<(String, ByteVec)>), ComputeError> {
    let host = |e: std::io::Error| ComputeError::Host(e.to_string());
    let input = dir.join("input");
    std::fs::create_dir_all(&input).map_err(host)?;
    for (path, bytes) in &req.input {
        let rel = safe_relative(path).ok_or_else(|| {
            ComputeError::Invalid(format!(
                "the input path `{}` is not plain",
                path.escape_default()
            ))
        })?;
        let to = input.join(rel);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(host)?;
        }
        std::fs::write(&to, bytes.as_slice()).map_err(host)?;
    }
    let stdin = match &req.stdin {
        Some(b) => {
            let p = dir.join("stdin");
            std::fs::write(&p, b.as_slice()).map_err(host)?;
            Some(p)
        }
        None => None,
    };
    let job = Job {
        module: &req.module,
        args: &req.args,
        env: &req.env,
        input: (!req.input.is_empty()).then_some(input.as_path()),
        stdin: stdin.as_deref(),
        seed: req.seed,
        limits: Limits {
            fuel: req.fuel,
            memory: usize::try_from(req.memory).unwrap_or(usize::MAX),
            output: MAX_REPLY as u64 / 2,
            wall: MAX_WALL,
        },
        cancel,
    };
    let out = dir.join("out");
    let ran = sandbox.run(&job, &out)?;
    let mut files = Vec::new();
    for (rel, path) in crate::result_files(&out).map_err(host)? {
        files.push((rel, std::fs::read(&path).map_err(host)?.into()));
    }
    Ok((ran, files))
}

/// `path` as relative parts with no `.`, `..` or empty part.
pub fn safe_relative(path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = path.split('/').collect();
    if path.is_empty()
        || path.len() > 4096
        || parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return None;
    }
    Some(parts.iter().collect())
}

/// One runner's answer, as the asking node saw it.
#[derive(Debug, Clone)]
pub struct RunnerAnswer {
    /// The runner's node.
    pub node: Key,
    /// What it answered, or why there is no answer to count.
    pub reply: Result<JobReply, AskError>,
}

/// Why a runner's answer does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskError {
    /// It could not be reached, or did not answer in time.
    Unreachable(String),
    /// It answered, and the answer broke the protocol: a receipt that does not verify, files
    /// that do not match the hash it signed. Counted against the runner.
    Broken(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Unreachable(e) => write!(f, "unreachable: {e}"),
            AskError::Broken(e) => write!(f, "broken answer: {e}"),
        }
    }
}

/// What asking the pool gave.
#[derive(Debug, Clone)]
pub struct PoolRun {
    /// The job's id.
    pub id: Key,
    /// The agreed answer's files and hash, exit and fuel (if runners agreed).
    pub agreed: Option<JobReply>,
    /// Every runner asked, in order.
    pub answers: Vec<RunnerAnswer>,
}

/// The nodes that may run jobs of at most `memory` bytes for pool `v` (one per member, this
/// node's own member included), most recently heard from first.
pub fn runners(pools: &Pools, pool: &Key, memory: u64) -> Vec<Key> {
    let Some(v) = pools.view_of(pool) else { return Vec::new() };
    let limit = v.charter.repair_after_ms as i64;
    let by_recency = pools.nodes_by_recency(&v);
    let me = pools.node();
    let mut order: Vec<Key> = vec![me];
    order.extend(by_recency.iter().map(|e| *e.as_bytes()));
    let mut seen_members = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for n in order {
        let Some(owner) = v.node_owner(&n) else { continue };
        let Some(m) = v.members.get(&owner) else { continue };
        let lends = m.compute.get(&n).is_some_and(|o| o.cpu > 0 && o.memory >= memory);
        let alive = n == me || pools.silent_for_ms(&n) <= limit;
        if lends && alive && seen_members.insert(owner) {
            out.push(n);
        }
    }
    // Runners whose answers other members found mostly wrong are asked last (this node, the
    // asker's own, stays first).
    out.sort_by_key(|n| *n != me && v.reputation(n).doubtful());
    out
}

/// What a pool run found of each runner that answered, once a result was accepted: `Ok` for
/// an answer that agreed with it, `Err(why)` for one that did not or broke the protocol
/// (refusals and silence say nothing of a runner's honesty; this node is left out). Empty when
/// nothing was accepted: then nobody can tell who was wrong.
pub fn verdicts(run: &PoolRun, me: &Key) -> Vec<(Key, Result<(), String>)> {
    let Some(agreed) = &run.agreed else { return Vec::new() };
    run.answers
        .iter()
        .filter(|a| a.node != *me)
        .filter_map(|a| {
            let v = match &a.reply {
                Ok(JobReply::Refused(_)) | Err(AskError::Unreachable(_)) => return None,
                Err(AskError::Broken(why)) => Err(why.clone()),
                Ok(r) if same(agreed, r) => Ok(()),
                Ok(JobReply::Ran { hash, exit, .. }) => Err(format!(
                    "job {}: result {} (exit {exit}) where the others agreed on another",
                    &hex(&run.id)[..16],
                    &hex(hash)[..16]
                )),
                Ok(JobReply::Failed(why)) => Err(format!(
                    "job {}: said it failed ({why}) where the others agreed on a result",
                    &hex(&run.id)[..16]
                )),
            };
            Some((a.node, v))
        })
        .collect()
}

/// Asks one runner.
pub async fn ask(
    node: &Node,
    pools: &Pools,
    runner: Key,
    req: &JobRequest,
) -> Result<JobReply, AskError> {
    let reply = reach(node, pools, runner, req).await.map_err(AskError::Unreachable)?;
    check_reply(&runner, req, &reply).map_err(AskError::Broken)?;
    Ok(reply)
}

/// Sends `req` to `runner` and reads its answer.
async fn reach(
    node: &Node,
    pools: &Pools,
    runner: Key,
    req: &JobRequest,
) -> Result<JobReply, String> {
    let peer = EndpointId::from_bytes(&runner).map_err(|e| e.to_string())?;
    let conn =
        tokio::time::timeout(Duration::from_secs(10), node.endpoint().connect(peer, JOB_ALPN))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| kith_node::net::connect_error(&peer, e).to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write_max(&mut send, req, MAX_REQUEST).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply: JobReply = tokio::time::timeout(RUN_LIMIT, frame::read_max(&mut recv, MAX_REPLY))
        .await
        .map_err(|_| "the runner took over an hour".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("the runner closed the stream without answering")?;
    conn.close(0u32.into(), b"done");
    pools.saw(&runner);
    Ok(reply)
}

/// Checks a runner's answer: its receipt signed by the runner's node key over this job, and
/// its files hashing to what it signed.
pub fn check_reply(runner: &Key, req: &JobRequest, reply: &JobReply) -> Result<(), String> {
    let peer = EndpointId::from_bytes(runner).map_err(|e| e.to_string())?;
    if let JobReply::Ran { hash, fuel, sig, exit, .. } = reply {
        let sig: [u8; 64] =
            sig.as_slice().try_into().map_err(|_| "the runner's receipt is not a signature")?;
        peer.verify(
            &receipt(&req.pool, &req.id(), hash, *exit, *fuel),
            &iroh::Signature::from_bytes(&sig),
        )
        .map_err(|_| "the runner's receipt does not verify".to_string())?;
        let files = match reply {
            JobReply::Ran { files, .. } => files.as_slice(),
            _ => &[],
        };
        if files_hash(files) != *hash {
            let files_bytes: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
            return Err(format!(
                "the runner's {files_bytes} bytes of result do not match its hash"
            ));
        }
    }
    Ok(())
}

/// The hash of a result's files (path, bytes), as receipts sign it: what the sandbox computes
/// of the files a job left.
pub fn files_hash(files: &[(String, ByteVec)]) -> Key {
    let mut h = crate::result_hasher();
    for (rel, data) in files {
        crate::hash_entry(&mut h, rel, data);
    }
    *h.finalize().as_bytes()
}

/// Whether two answers agree: the same result (hash and exit), or the same failure.
pub fn same(a: &JobReply, b: &JobReply) -> bool {
    match (a, b) {
        (JobReply::Ran { hash: h1, exit: e1, .. }, JobReply::Ran { hash: h2, exit: e2, .. }) => {
            h1 == h2 && e1 == e2
        }
        (JobReply::Failed(x), JobReply::Failed(y)) => x == y,
        _ => false,
    }
}

/// Runs `req` on `redundancy` runners of distinct members, then on more while they disagree,
/// until `redundancy` answers agree or the runners run out. This node runs it too when it
/// lends CPU (`local` runs it without the network).
pub async fn run_in_pool(
    node: &Node,
    pools: &Pools,
    local: Option<&JobProtocol>,
    req: &JobRequest,
    redundancy: usize,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<PoolRun, String> {
    let mut candidates = runners(pools, &req.pool, req.memory);
    let me = pools.node();
    // This node first when it lends; then runners others found honest before doubtful ones;
    // then runners that answered their last ping before those that did not (a node that is
    // gone costs a connection timeout); then runners on this LAN (announced by mDNS) before
    // the rest; among those, the ones
    // this node gave fewest jobs (load spread over the pool, and every runner checked against
    // the others in turn); then the nearest by round trip; then the most recently heard from.
    if let Some(l) = local {
        let given = l.given.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let v = pools.view_of(&req.pool);
        let peers: std::collections::HashMap<Key, (bool, bool, u32)> = node
            .peers()
            .into_iter()
            .map(|p| {
                let rtt = p.pong.as_ref().map_or(u32::MAX, |x| x.rtt_ms);
                let silent = p.reachability == kith_node::net::peers::Reachability::Unreachable;
                (*p.id.as_bytes(), (silent, p.mdns, rtt))
            })
            .collect();
        candidates.sort_by_key(|n| {
            let doubtful = v.as_ref().is_some_and(|v| v.reputation(n).doubtful());
            let (silent, lan, rtt) = peers.get(n).copied().unwrap_or((false, false, u32::MAX));
            (*n != me, doubtful, silent, !lan, given.get(n).copied().unwrap_or(0), rtt)
        });
    }
    if candidates.len() < redundancy {
        return Err(format!(
            "{} member node(s) lend CPU to this pool (with {} bytes of memory), fewer than the {redundancy} runners asked for: members lend with `kith offer POOL --cpu N`",
            candidates.len(),
            req.memory
        ));
    }
    let cancel = &cancel;
    let ask_one = |runner: Key| async move {
        if let Some(l) = local {
            *l.given.lock().unwrap_or_else(|p| p.into_inner()).entry(runner).or_default() += 1;
        }
        let reply = match local.filter(|_| runner == me) {
            Some(l) => match l.admit(&me, req) {
                Ok(slot) => {
                    let r = l.run_cancellable(req.clone(), cancel.clone()).await;
                    drop(slot);
                    Ok(r)
                }
                Err(why) => Ok(JobReply::Refused(why)),
            },
            None => ask(node, pools, runner, req).await,
        };
        RunnerAnswer { node: runner, reply }
    };
    let mut answers: Vec<RunnerAnswer> = Vec::new();
    let mut next = 0;
    loop {
        // Ask as many more as could still make `redundancy` agree.
        let agreeing_best = best(&answers).map(|(_, n)| n).unwrap_or(0);
        let need = redundancy.saturating_sub(agreeing_best).max(1);
        let batch: Vec<Key> = candidates[next..].iter().take(need).copied().collect();
        if batch.is_empty() {
            break;
        }
        next += batch.len();
        let got = n0_future::join_all(batch.into_iter().map(ask_one)).await;
        answers.extend(got);
        if let Some((reply, n)) = best(&answers)
            && n >= redundancy
        {
            return Ok(PoolRun { id: req.id(), agreed: Some(reply), answers });
        }
    }
    Ok(PoolRun { id: req.id(), agreed: None, answers })
}

/// The answer most runners agree on, and how many.
fn best(answers: &[RunnerAnswer]) -> Option<(JobReply, usize)> {
    let usable: Vec<&JobReply> = answers
        .iter()
        .filter_map(|a| a.reply.as_ref().ok())
        .filter(|r| !matches!(r, JobReply::Refused(_)))
        .collect();
    usable
        .iter()
        .map(|r| ((*r).clone(), usable.iter().filter(|o| same(r, o)).count()))
        .max_by_key(|(_, n)| *n)
}
