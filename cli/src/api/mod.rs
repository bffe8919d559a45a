//! The typed API of every command: a request type, and what it answers. The same types cross
//! the control socket (as JSON) and run in this process; `--json` prints the answer's JSON.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod jobs;
pub mod ledger;
pub mod node;
pub mod pools;
pub mod sites;
pub mod store;

pub use ledger::LedgerReq;
pub use pools::PoolReq;
pub use sites::SiteReq;

/// Version of the request format; a daemon refuses requests it does not know, naming its own.
pub const API_VERSION: u32 = 1;

/// A command, as the CLI sends it (paths absolute, or with the caller's folder).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Node, addresses, peers, store usage.
    Status,
    /// Store a path (and put it into a pool).
    Put {
        /// The file, folder or symlink (absolute).
        path: PathBuf,
        /// Also put it into this pool.
        #[serde(default)]
        pool: Option<String>,
    },
    /// Restore an object, or a file or folder inside it.
    Get {
        /// An id, a unique prefix, `PATH@VERSION` or a stored path; `SPEC:path/inside` for a
        /// file or folder inside it.
        spec: String,
        /// The caller's folder, for relative paths in `spec`.
        cwd: PathBuf,
        /// Where to restore it.
        to: GetTo,
    },
    /// List objects.
    Ls,
    /// List the files of an object.
    Files {
        /// An id, a unique prefix, `PATH@VERSION` or a stored path.
        spec: String,
        /// The caller's folder, for relative paths in `spec`.
        cwd: PathBuf,
    },
    /// What changed between two objects (versions).
    Diff {
        /// The older one (as `spec` of [`Request::Files`]).
        old: String,
        /// The newer one.
        new: String,
        /// The caller's folder, for relative paths in the specs.
        cwd: PathBuf,
    },
    /// Versions of a path.
    Log {
        /// The source path (absolute).
        path: PathBuf,
    },
    /// Forget an object, here and in the pools it was put into.
    Rm {
        /// An id, a unique prefix or `PATH@VERSION`.
        spec: String,
        /// The caller's folder, for relative paths in `spec`.
        cwd: PathBuf,
        /// Only here: the pools keep their copy.
        #[serde(default)]
        here_only: bool,
    },
    /// Write everything of this identity into one file.
    Export {
        /// The file (absolute); it must not exist.
        path: PathBuf,
        /// Instead, the latest version of every stored path as ordinary files under `path`.
        #[serde(default)]
        plain: bool,
    },
    /// Move this identity's objects out of a pool, into another pool or home.
    Move {
        /// The source pool.
        from: String,
        /// The destination pool, or `home`.
        to: String,
    },
    /// Write a drop of a pool into a new file.
    DropMake {
        /// The pool (empty: the only one).
        pool: String,
        /// The file (absolute); it must not exist.
        path: PathBuf,
        /// Everything, not only what the other side lacks.
        #[serde(default)]
        full: bool,
    },
    /// Apply a drop file.
    DropApply {
        /// The file (absolute).
        path: PathBuf,
    },
    /// Add a scheduled backup job.
    BackupAdd {
        /// What to store (absolute).
        path: PathBuf,
        /// `home`, or a pool.
        to: String,
        /// How often (`1h`, `30m`, `1d`).
        every: String,
        /// What to keep (`daily=7,weekly=4`, or `all`).
        keep: String,
        /// Its name (default: the path's last part).
        #[serde(default)]
        name: Option<String>,
    },
    /// The backup jobs.
    BackupLs,
    /// Run backup jobs now (one, or all).
    BackupRun {
        /// The job (none: every job).
        #[serde(default)]
        name: Option<String>,
    },
    /// Remove a backup job (its versions stay).
    BackupRm {
        /// The job.
        name: String,
    },
    /// Take in an export of this identity.
    Import {
        /// The file (absolute).
        path: PathBuf,
    },
    /// Reclaim unreferenced chunks.
    Gc,
    /// Check everything.
    Verify,
    /// The peer table.
    Peers,
    /// Add a peer by ticket.
    PeerAdd {
        /// `kith1...` from `kith id --ticket`.
        ticket: String,
    },
    /// Remove a peer.
    PeerRm {
        /// The peer's node id or a prefix.
        peer: String,
    },
    /// Reach a peer now, directly or through a neighbour.
    PeerLink {
        /// The peer's node id or a prefix.
        peer: String,
    },
    /// This node's ticket.
    Ticket,
    /// A pool command.
    Pool(PoolReq),
    /// A ledger command.
    Ledger(LedgerReq),
    /// A site command.
    Site(SiteReq),
    /// A pairing code for a browser's upload.
    Pair,
    /// Checks of this node's setup, with what to fix.
    Doctor,
    /// Run a WebAssembly job, here or on the pool's nodes; answers [`jobs::JobDone`].
    JobRun(jobs::JobRun),
    /// The jobs asked for here and run here for others; answers [`jobs::JobList`].
    JobLs,
    /// One job, by a prefix of its id; answers [`jobs::JobEntry`].
    JobShow {
        /// A prefix of its id (hex).
        id: String,
    },
    /// Stop jobs by a prefix of their id; answers [`jobs::JobCancelled`].
    JobCancel {
        /// A prefix of its id (hex).
        id: String,
    },
    /// Where the dashboard is, with its token; answers [`node::DashboardUrl`].
    Dashboard {
        /// Replace the token first (every address given before stops working).
        #[serde(default)]
        new_token: bool,
    },
}

/// Where `get` restores to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GetTo {
    /// A file object's bytes as data frames, for standard output.
    Stdout,
    /// This path, which must not exist.
    Path(PathBuf),
    /// The object's original name, in the caller's folder.
    Here,
}
