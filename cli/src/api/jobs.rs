//! `kith job`: WebAssembly jobs run on this node or on the pool's nodes (docs/compute.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `kith job run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRun {
    /// The module, `.wasm` or `.wat` (absolute).
    pub module: PathBuf,
    /// The pool whose nodes run it (none: this node, without the network).
    #[serde(default)]
    pub pool: Option<String>,
    /// How many members' nodes must agree on the result.
    #[serde(default = "one")]
    pub redundancy: u32,
    /// A file or folder, seen read-only at `/input` (absolute).
    #[serde(default)]
    pub input: Option<PathBuf>,
    /// An object of this node's store (an id prefix, or `PATH@N`), restored and seen
    /// read-only at `/input`, instead of `input`.
    #[serde(default)]
    pub input_object: Option<String>,
    /// Standard input (absolute).
    #[serde(default)]
    pub stdin: Option<PathBuf>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Fuel it may burn (default: ten reference CPU-minutes).
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Memory it may use (a size).
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Where its result goes: a folder that must not exist (absolute).
    pub out: PathBuf,
}

fn one() -> u32 {
    1
}

fn default_memory() -> String {
    "256MiB".into()
}

/// A job done: where its result is, and who ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobDone {
    /// The job's id (hex).
    pub id: String,
    /// The result's hash, which the runners agreed on (hex).
    pub hash: String,
    /// Its exit status.
    pub exit: i32,
    /// Fuel it burnt.
    pub fuel: u64,
    /// The same, in reference CPU-seconds.
    pub cpu_seconds: f64,
    /// Files in the result (`stdout`, `output/...`).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Where they are.
    pub out: String,
    /// The result stored as an object of this node's store (hex).
    pub object: String,
    /// Every runner asked.
    pub runners: Vec<JobRunner>,
}

/// One runner's part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRunner {
    /// Its node (hex).
    pub node: String,
    /// `agreed`, `disagreed`, `failed: ...` or `refused: ...`.
    pub answer: String,
    /// Wall time there (ms).
    #[serde(default)]
    pub wall_ms: u64,
}

/// A job in `kith job ls` and `show`: one this node asked for, or one it runs for another
/// member's node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEntry {
    /// The job's id (hex).
    pub id: String,
    /// `submitted` (asked for here) or `runner` (run here for another member's node).
    pub side: String,
    /// The module's file name (submitted) or the asking member's name (runner).
    pub what: String,
    /// The pool's name; empty for a job run here without the pool.
    #[serde(default)]
    pub pool: String,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// When it ended.
    #[serde(default)]
    pub ended_ms: Option<i64>,
    /// How many runners had to agree.
    #[serde(default)]
    pub redundancy: u32,
    /// What each runner answered (submitted jobs, once done or failed).
    #[serde(default)]
    pub runners: Vec<JobRunner>,
    /// The agreed result's hash (hex).
    #[serde(default)]
    pub hash: Option<String>,
    /// Its exit status.
    #[serde(default)]
    pub exit: Option<i32>,
    /// Reference CPU-seconds of fuel it burnt (or may burn, while running for another).
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Where the result went.
    #[serde(default)]
    pub out: Option<String>,
    /// The result stored as an object (hex).
    #[serde(default)]
    pub object: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// `kith job ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobEntry>,
}

/// `kith job cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCancelled {
    /// Jobs this node asked for that were stopped.
    pub submitted: u64,
    /// Jobs run here for others that were stopped (their askers are told it was cancelled).
    pub running_for_others: u64,
}
