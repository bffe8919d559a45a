//! kith compute: a job is a WebAssembly module (WASI preview 1) run by wasmtime in a sandbox
//! that makes it deterministic and bounded, so that two members' nodes running the same job
//! produce the same bytes, and a hash of those bytes tells whether they agree.
//!
//! What a job sees: its arguments and environment; its inputs read-only at `/input`; a folder
//! to write at `/output`; standard input from a file, if it was given one; standard output,
//! which becomes the file `stdout` of the result; standard error, kept apart and not part of
//! the result. A wall clock that reads the job's fixed start time and a monotonic clock that
//! only the job's own fuel moves (so `sleep` and timing give the same answers everywhere);
//! random bytes from a generator seeded by the job itself. No network, no other files, no
//! threads. What it may import is checked before it runs: WASI preview 1 functions other than
//! sockets, and nothing else.
//!
//! Bounds: fuel (wasmtime's count of executed operations; a job that runs out stops with
//! [`ComputeError::OutOfFuel`]), linear memory (a job that grows beyond it stops with
//! [`ComputeError::Memory`]), the size of what it writes (checked when it ends), and its stack.
//! Floating-point NaNs are canonicalised, and relaxed SIMD gives the same answer on every CPU,
//! as determinism requires.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod determinism;
pub mod jobs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// The WASI module a job may import from.
pub const WASI: &str = "wasi_snapshot_preview1";
/// WASI preview 1 functions a job may not import: the sockets reach the network, and
/// `poll_oneoff` waits on real time (a sleep would cost no fuel and hold a runner's slot).
pub const REFUSED_IMPORTS: [&str; 5] =
    ["sock_accept", "sock_recv", "sock_send", "sock_shutdown", "poll_oneoff"];
/// How often the sandbox looks at a running job's wall time and output.
pub const TICK: Duration = Duration::from_millis(100);
/// Most files a job may leave in its result.
pub const MAX_RESULT_FILES: usize = 10_000;
/// Largest module accepted (bytes, `.wasm` or `.wat`).
pub const MAX_MODULE: usize = 64 << 20;
/// Fuel units per reference CPU-second: what `kith` counts a job's CPU time in. Measured on
/// the reference job of `testnet compute-bench` on this project's 2-core machine: 2.14 × 10¹⁰
/// units per second of wasmtime's run on a quiet machine, 1.81 × 10¹⁰ beside a chaos run
/// (2026-12-01; docs/benchmarks.md).
pub const FUEL_PER_CPU_SECOND: u64 = kith_pools::ledger::FUEL_PER_CPU_SECOND;
/// The wall clock a job reads: 2020-01-01T00:00:00Z, the same on every node.
pub const JOB_EPOCH: Duration = Duration::from_secs(1_577_836_800);

/// What a job may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (operations) it may burn.
    pub fuel: u64,
    /// Linear memory it may grow to (bytes).
    pub memory: usize,
    /// Bytes it may write in all (output files and standard output), checked while it runs.
    pub output: u64,
    /// Wall time it may take on this node (not part of its result: a job stopped by it is
    /// this node's failure, not the job's).
    pub wall: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: 600 * FUEL_PER_CPU_SECOND,
            memory: 1 << 30,
            output: 1 << 30,
            wall: Duration::from_secs(3600),
        }
    }
}

/// A job to run here.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// The module: WebAssembly binary, or text (`.wat`).
    pub module: &'a [u8],
    /// Arguments after the program's name.
    pub args: &'a [String],
    /// Environment variables.
    pub env: &'a [(String, String)],
    /// Preopened read-only at `/input`, if any.
    pub input: Option<&'a Path>,
    /// Standard input, if any (a file).
    pub stdin: Option<&'a Path>,
    /// The seed of the job's random bytes (the same on every runner).
    pub seed: [u8; 32],
    /// Its bounds.
    pub limits: Limits,
    /// Set to stop it (checked every [`TICK`]): the job ends with [`ComputeError::Cancelled`].
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The exit status (0: success).
    pub exit: i32,
    /// Fuel burnt.
    pub fuel: u64,
    /// BLAKE3 of the result: every output file (path, length, bytes, in path order) and the
    /// standard output. Runners that agree have the same hash.
    pub hash: [u8; 32],
    /// Files in the result (standard output included).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Wall time of the run (not part of the result).
    pub wall: Duration,
    /// The last lines of standard error (not part of the result).
    pub stderr: String,
}

/// Why a job did not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComputeError {
    /// The module is not WebAssembly, or does not validate.
    #[error("the module is not valid WebAssembly: {0}")]
    Invalid(String),
    /// The module is too large.
    #[error("the module is {0} bytes; jobs take modules up to {MAX_MODULE} bytes")]
    TooLarge(usize),
    /// It imports what a job may not use.
    #[error(
        "the module imports {0}, which a job may not use (jobs get WASI preview 1 without sockets: see docs/compute.md)"
    )]
    Import(String),
    /// It has no `_start` (it is not a WASI command).
    #[error("the module exports no `_start`: a job is a WASI command (a `main`)")]
    NoStart,
    /// It burnt all its fuel.
    #[error("the job ran out of fuel after {0} units (raise it with --fuel)")]
    OutOfFuel(u64),
    /// It wanted more memory than it may have.
    #[error("the job needed more than {0} bytes of memory (raise it with --memory)")]
    Memory(usize),
    /// It wrote more than it may.
    #[error("the job wrote {0} bytes, more than the {1} it may")]
    Output(u64, u64),
    /// It ran past its wall time here (this node's failure: another may finish it).
    #[error("the job ran past {0:?} of wall time on this node")]
    TimedOut(Duration),
    /// It trapped (a bug in the job: out of bounds, unreachable, stack overflow).
    #[error("the job failed: {0}")]
    Trap(String),
    /// The node could not set the run up (its disk).
    #[error("cannot run the job here: {0}")]
    Host(String),
    /// It was cancelled (by whoever asked for it, or by this node's owner).
    #[error("the job was cancelled")]
    Cancelled,
}

/// The engine jobs run in (one per node; compiling a module is per job).
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
    listings: determinism::Listings,
}

/// The job's wall clock: its fixed start.
struct FixedWall;

impl HostWallClock for FixedWall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        JOB_EPOCH
    }
}

/// The job's monotonic clock: it moves by one nanosecond each time it is read, so loops that
/// wait on it end, and every runner sees the same readings.
struct Ticks(std::sync::atomic::AtomicU64);

impl HostMonotonicClock for Ticks {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A generator of the job's random bytes: BLAKE3 in keyed XOF mode over the job's seed.
struct Seeded(blake3::OutputReader);

impl rand_core::TryRng for Seeded {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst);
        Ok(())
    }
}

impl Sandbox {
    /// The engine: fuel on, NaNs canonical, relaxed SIMD deterministic (threads are not built),
    /// and an epoch every [`TICK`] (a thread that ends with the engine) for the checks a job's
    /// fuel cannot make: its wall time and the size of what it wrote.
    pub fn new() -> Result<Sandbox, ComputeError> {
        let mut c = Config::new();
        c.consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .max_wasm_stack(1 << 20);
        let engine = Engine::new(&c).map_err(|e| ComputeError::Host(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("kith-job-ticks".into())
            .spawn(move || {
                while let Some(e) = weak.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| ComputeError::Host(e.to_string()))?;
        Ok(Sandbox { engine })
    }

    /// Compiles and checks a module: valid, only allowed imports, a `_start`.
    pub fn check(&self, module: &[u8]) -> Result<Module, ComputeError> {
        if module.len() > MAX_MODULE {
            return Err(ComputeError::TooLarge(module.len()));
        }
        let m = Module::new(&self.engine, module)
            .map_err(|e| ComputeError::Invalid(format!("{e:#}")))?;
        for i in m.imports() {
            let allowed = i.module() == WASI
                && matches!(i.ty(), wasmtime::ExternType::Func(_))
                && !REFUSED_IMPORTS.contains(&i.name());
            if !allowed {
                return Err(ComputeError::Import(format!("`{}::{}`", i.module(), i.name())));
            }
        }
        if m.get_export("_start").is_none() {
            return Err(ComputeError::NoStart);
        }
        Ok(m)
    }

    /// Runs `job` with its outputs written under `out` (made here; `out/output` is the job's
    /// `/output`, `out/stdout` its standard output).
    pub fn run(&self, job: &Job<'_>, out: &Path) -> Result<Ran, ComputeError> {
        let host = |e: std::io::Error| ComputeError::Host(e.to_string());
        let module = self.check(job.module)?;
        let output = out.join("output");
        std::fs::create_dir_all(&output).map_err(host)?;
        let stdout = std::fs::File::create(out.join("stdout")).map_err(host)?;
        let stderr_path = out.join(".stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(host)?;
        let mut b = WasiCtxBuilder::new();
        let mut argv = vec!["job".to_string()];
        argv.extend(job.args.iter().cloned());
        b.args(&argv)
            .envs(job.env)
            .stdout(wasmtime_wasi::cli::OutputFile::new(stdout))
            .stderr(wasmtime_wasi::cli::OutputFile::new(stderr))
            .wall_clock(FixedWall)
            .monotonic_clock(Ticks(Default::default()))
            .secure_random(Seeded(blake3::Hasher::new_keyed(&job.seed).finalize_xof()))
            .insecure_random(Seeded(
                blake3::Hasher::new_derive_key("kith job insecure random")
                    .update(&job.seed)
                    .finalize_xof(),
            ))
            .insecure_random_seed(u128::from_le_bytes(job.seed[..16].try_into().expect("16")))
            .allow_blocking_current_thread(true);
        if let Some(stdin) = job.stdin {
            let f = std::fs::File::open(stdin).map_err(host)?;
            b.stdin(wasmtime_wasi::cli::InputFile::new(f));
        }
        if let Some(input) = job.input {
            b.preopened_dir(input, "/input", FsPerms::ReadOnly)
                .map_err(|e| ComputeError::Host(format!("{e:#}")))?;
        }
        b.preopened_dir(&output, "/output", FsPerms::ReadWrite)
            .map_err(|e| ComputeError::Host(format!("{e:#}")))?;
        let wasi = b.build_p1();
        let limits = StoreLimitsBuilder::new()
            .memory_size(job.limits.memory)
            .table_elements(1 << 20)
            .instances(1)
            .tables(4)
            .memories(1)
            .trap_on_grow_failure(true)
            .build();
        let mut store =
            Store::new(&self.engine, State { wasi, limits, listings: Default::default() });
        store.limiter(|s| &mut s.limits);
        store.set_fuel(job.limits.fuel).map_err(|e| ComputeError::Host(e.to_string()))?;
        // Every tick: past its wall time, or over what it may write (sparse files count at
        // their length), it stops.
        let stop = std::sync::Arc::new(std::sync::Mutex::new(None::<ComputeError>));
        let (why, watched, limits, begun) =
            (stop.clone(), out.to_path_buf(), job.limits, Instant::now());
        let cancel = job.cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            let cancelled =
                cancel.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
            let over = if cancelled {
                Some(ComputeError::Cancelled)
            } else if begun.elapsed() > limits.wall {
                Some(ComputeError::TimedOut(limits.wall))
            } else {
                match written(&watched) {
                    Ok((bytes, _)) if bytes > limits.output => {
                        Some(ComputeError::Output(bytes, limits.output))
                    }
                    Ok((_, files)) if files > MAX_RESULT_FILES as u64 => Some(ComputeError::Trap(
                        format!("the job wrote more than {MAX_RESULT_FILES} files"),
                    )),
                    _ => None,
                }
            };
            match over {
                Some(e) => {
                    *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    Ok(wasmtime::UpdateDeadline::Interrupt)
                }
                None => Ok(wasmtime::UpdateDeadline::Continue(1)),
            }
        });
        let mut linker: Linker<State> = Linker::new(&self.engine);
        p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
            .map_err(|e| ComputeError::Host(e.to_string()))?;
        determinism::wrap(&mut linker, |s: &mut State| (&mut s.wasi, &mut s.listings))
            .map_err(|e| ComputeError::Host(e.to_string()))?;
        let started = Instant::now();
        let result = linker
            .instantiate(&mut store, &module)
            .and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start"))
            .and_then(|f| f.call(&mut store, ()));
        let wall = started.elapsed();
        let fuel = job.limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        if let Some(e) = stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        let exit = match result {
            Ok(()) => 0,
            Err(e) => {
                if let Some(x) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    x.0
                } else if let Some(wasmtime::Trap::OutOfFuel) = e.downcast_ref::<wasmtime::Trap>() {
                    return Err(ComputeError::OutOfFuel(job.limits.fuel));
                } else if format!("{e:#}").contains("memory") && format!("{e:#}").contains("grow")
                    || matches!(
                        e.downcast_ref::<wasmtime::Trap>(),
                        Some(wasmtime::Trap::AllocationTooLarge)
                    )
                {
                    return Err(ComputeError::Memory(job.limits.memory));
                } else {
                    return Err(ComputeError::Trap(format!("{e:#}")));
                }
            }
        };
        drop(store);
        let tail = tail_of(&stderr_path, 4096);
        let _ = std::fs::remove_file(&stderr_path);
        // Sizes first (a sparse file counts at its length), then the bytes.
        let (bytes, files) = written(out).map_err(host)?;
        if bytes > job.limits.output {
            return Err(ComputeError::Output(bytes, job.limits.output));
        }
        if files > MAX_RESULT_FILES as u64 {
            return Err(ComputeError::Trap(format!(
                "the job wrote more than {MAX_RESULT_FILES} files"
            )));
        }
        let (hash, files, bytes) = result_hash(out).map_err(host)?;
        Ok(Ran {
            exit,
            fuel,
            hash,
            files,
            bytes,
            wall,
            stderr: String::from_utf8_lossy(&tail).into_owned(),
        })
    }
}

/// The last `n` bytes of a file.
fn tail_of(path: &Path, n: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(n)));
    let mut v = Vec::new();
    let _ = f.take(n).read_to_end(&mut v);
    v
}

/// Bytes (files' lengths, sparse or not) and files a job wrote under `out` so far, standard
/// error included.
fn written(out: &Path) -> std::io::Result<(u64, u64)> {
    fn walk(dir: &Path, acc: &mut (u64, u64)) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                walk(&e.path(), acc)?;
            } else {
                acc.0 += e.metadata()?.len();
                acc.1 += 1;
            }
            if acc.1 > MAX_RESULT_FILES as u64 + 10 {
                return Ok(());
            }
        }
        Ok(())
    }
    let mut acc = (0, 0);
    walk(out, &mut acc)?;
    Ok(acc)
}

/// The files of a result under `out` (`stdout`, and everything under `output/`), by their
/// path relative to `out`, in path order.
pub fn result_files(out: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    fn walk(dir: &Path, rel: &str, into: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let t = e.file_type()?;
            if t.is_dir() {
                walk(&e.path(), &path, into)?;
            } else if t.is_file() {
                into.insert(path, e.path());
            }
        }
        Ok(())
    }
    let mut files = BTreeMap::new();
    files.insert("stdout".to_string(), out.join("stdout"));
    walk(&out.join("output"), "output", &mut files)?;
    Ok(files)
}

/// BLAKE3 over a result's files (path, length, bytes, in path order): what runners compare.
pub fn result_hash(out: &Path) -> std::io::Result<([u8; 32], u64, u64)> {
    let mut h = result_hasher();
    let (mut files, mut bytes) = (0u64, 0u64);
    for (rel, path) in result_files(out)? {
        let data = std::fs::read(&path)?;
        hash_entry(&mut h, &rel, &data);
        files += 1;
        bytes += data.len() as u64;
    }
    Ok((*h.finalize().as_bytes(), files, bytes))
}

/// The hasher of results.
pub(crate) fn result_hasher() -> blake3::Hasher {
    blake3::Hasher::new_derive_key("kith job result v1")
}

/// One file of a result into its hash: path length, path, length, bytes.
pub(crate) fn hash_entry(h: &mut blake3::Hasher, rel: &str, data: &[u8]) {
    h.update(&(rel.len() as u64).to_le_bytes());
    h.update(rel.as_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(data);
}

#[cfg(test)]
mod tests;
