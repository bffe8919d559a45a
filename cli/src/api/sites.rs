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
    /// Change a setting of a site (`keep N`: how many versions it keeps).
    Set {
        /// The site.
        name: String,
        /// The setting.
        key: String,
        /// Its value.
        value: String,
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

/// `kith site publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The site.
    pub name: String,
    /// The pool (hex).
    pub pool: String,
    /// The new version's number.
    pub version: u64,
    /// `public` or `members`.
    pub access: String,
    /// Files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs this version added.
    pub new_blobs: u64,
    /// Blobs in all.
    pub blobs: u64,
    /// Files left out (hidden, unreadable), with why.
    pub skipped: Vec<String>,
    /// Where it is served.
    pub urls: Vec<String>,
    /// Seconds it took.
    pub seconds: f64,
    /// How its blobs went to the pool's holders.
    pub pool_put: crate::api::store::PoolPut,
}

/// `kith site ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteList {
    /// Every site of this node's pools.
    pub sites: Vec<SiteEntry>,
    /// Partners' sites this node serves as their CDN edge (`kith up --cdn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edge: Vec<EdgeSiteEntry>,
}

/// A partner's site this node serves as its CDN edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeSiteEntry {
    /// Its name.
    pub name: String,
    /// The partner pool's name.
    pub partner: String,
    /// The version served.
    pub version: u64,
    /// Its files.
    pub files: u64,
    /// Its bytes.
    pub bytes: u64,
    /// Where it is served.
    pub urls: Vec<String>,
}

/// A site in a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteEntry {
    /// Its name.
    pub name: String,
    /// The pool (hex).
    pub pool: String,
    /// The pool's name.
    pub pool_name: String,
    /// Its owner (hex).
    pub owner: String,
    /// The owner's name.
    pub owner_name: String,
    /// `public` or `members`.
    pub access: String,
    /// The version served.
    pub version: u64,
    /// Its files.
    pub files: Option<u64>,
    /// Its bytes.
    pub bytes: Option<u64>,
    /// When it was published (ms since the epoch).
    pub at_ms: Option<i64>,
    /// Whether this owner's site is the one served under the name.
    pub served: bool,
    /// Where it is served.
    pub urls: Vec<String>,
    /// Requests this node answered for it since it started.
    #[serde(default)]
    pub requests: u64,
    /// Of its chunks this node served, those from its cache.
    #[serde(default)]
    pub cache_hits: u64,
    /// The pool's nodes that serve it (every member's node; those heard from lately).
    #[serde(default)]
    pub nodes: u64,
}

/// `kith site versions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    /// The site.
    pub name: String,
    /// The pool (hex).
    pub pool: String,
    /// Its owner (hex).
    pub owner: String,
    /// Every version kept.
    pub versions: Vec<Version>,
}

/// One version of a site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    /// Its number.
    pub version: u64,
    /// Whether it is served.
    pub current: bool,
    /// Files.
    pub files: u64,
    /// Bytes.
    pub bytes: u64,
    /// When it was published (ms since the epoch).
    pub at_ms: i64,
    /// Its index blob (hex).
    pub index: String,
}

/// `kith site rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolledBack {
    /// The site.
    pub name: String,
    /// The version now served.
    pub version: u64,
}

/// `kith site set`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteSet {
    /// The site.
    pub name: String,
    /// How many versions it keeps.
    pub keep: u64,
    /// The versions forgotten now (their holders reclaim the space).
    pub forgotten: Vec<u64>,
}

/// `kith site rm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteRemoved {
    /// The site.
    pub name: String,
    /// Versions it had.
    pub versions: u64,
}

/// `kith site credential`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    /// The credential (a bearer token or cookie value).
    pub credential: String,
    /// The pool it opens (hex).
    pub pool: String,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
}
