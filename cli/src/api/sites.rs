//! Site commands.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A site command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "site_op", rename_all = "snake_case")]
pub enum SiteReq {
    /// Publish a folder as a new version.
    Publish {
        /// The folder (absolute).
        dir: PathBuf,
        /// The site's name (one DNS label).
        name: String,
        /// The pool (default: the only one).
        pool: Option<String>,
        /// Only the pool's members may read it.
        members: bool,
    },
    /// Sites of this node's pools.
    Ls,
    /// Versions of a site.
    Versions {
        /// The site.
        name: String,
    },
    /// Serve an earlier version again.
    Rollback {
        /// The site.
        name: String,
        /// The version.
        version: u64,
    },
    /// Take a site down.
    Rm {
        /// The site.
        name: String,
    },
    /// A credential for members-only sites.
    Credential {
        /// The pool (default: the only one).
        pool: Option<String>,
        /// How long it is valid (a duration).
        expires: String,
    },
}

impl SiteReq {
    /// Whether it only reads the pool documents (works without the daemon).
    pub fn reads_only(&self) -> bool {
        matches!(self, SiteReq::Ls | SiteReq::Versions { .. })
    }
}
