//! Listing and finding the objects a store holds: every object, the versions of a source,
//! what a user typed (an id, a prefix, `PATH@N` or a path), and the absolute path that names
//! a source.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::index::ObjectRow;
use super::root::EntryKind;
use super::tree::TreeStats;
use super::{Store, StoreError};
use crate::ids::{MIN_PREFIX_HEX, ObjectId, normalize_hex};

/// What a listing shows about one object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The object id.
    pub id: ObjectId,
    /// Its version number within its source's history.
    pub version: u32,
    /// When it was stored (ms since the epoch).
    pub created_ms: u64,
    /// The path it was stored from.
    pub source: PathBuf,
    /// What its root entry is.
    pub kind: EntryKind,
    /// Counts over its tree.
    pub stats: TreeStats,
    /// The previous version, if any.
    pub parent: Option<ObjectId>,
}

/// Bytes and counts the store holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreUsage {
    /// Pack files.
    pub packs: u64,
    /// Bytes in pack files.
    pub pack_bytes: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Objects.
    pub objects: u64,
}

impl Store {
    /// Every object, oldest first.
    pub fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        self.index().objects()?.into_iter().map(|row| self.info(row)).collect()
    }

    /// The versions stored from `source`, oldest first.
    pub fn log(&self, source: &Path) -> Result<Vec<ObjectInfo>, StoreError> {
        let source = absolute(source)?;
        let lineage = self.keys.lineage(source.as_os_str().as_bytes());
        let mut out = Vec::new();
        for (_, id) in self.index().versions(&lineage)? {
            if let Some(row) = self.index().object(&id)? {
                out.push(self.info(row)?);
            }
        }
        Ok(out)
    }

    /// Resolves what a user typed: a full id, an id prefix, `PATH@N`, or a path (its latest
    /// version).
    /// `cwd` is the folder relative paths in `spec` are relative to.
    pub fn resolve(&self, spec: &str, cwd: &Path) -> Result<ObjectId, StoreError> {
        if let Some((path, n)) = spec.rsplit_once('@').filter(|(p, _)| !p.is_empty()) {
            let n: u32 = n.parse().map_err(|_| {
                StoreError::BadSpec(format!("'{spec}': the version after '@' must be a number"))
            })?;
            let source = absolute_in(Path::new(path), cwd);
            let lineage = self.keys.lineage(source.as_os_str().as_bytes());
            let versions = self.index().versions(&lineage)?;
            return versions.iter().find(|(v, _)| *v == n).map(|(_, id)| *id).ok_or_else(|| {
                StoreError::NotFound(match versions.is_empty() {
                    true => format!("no versions stored from {}", source.display()),
                    false => format!("{} has no version {n} (see kith log)", source.display()),
                })
            });
        }
        if let Ok(hex) = normalize_hex(spec)
            && hex.len() >= MIN_PREFIX_HEX
        {
            let matches: Vec<ObjectId> = self
                .index()
                .objects()?
                .into_iter()
                .map(|r| r.id)
                .filter(|id| id.to_string().starts_with(&hex))
                .collect();
            match matches.len() {
                1 => return Ok(matches[0]),
                0 if hex.len() == 64 => {
                    return Err(StoreError::NotFound(format!("no object {hex}")));
                }
                0 => {}
                count => return Err(StoreError::Ambiguous { prefix: spec.into(), count }),
            }
        }
        let source = absolute_in(Path::new(spec), cwd);
        let lineage = self.keys.lineage(source.as_os_str().as_bytes());
        match self.index().versions(&lineage)?.last() {
            Some((_, id)) => Ok(*id),
            None => Err(StoreError::NotFound(format!(
                "'{spec}' is neither an object id nor a path with stored versions (see kith ls)"
            ))),
        }
    }

    /// Bytes and counts held.
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        let packs = self.index().packs()?;
        Ok(StoreUsage {
            packs: packs.len() as u64,
            pack_bytes: packs.iter().map(|p| p.size).sum(),
            blobs: self.index().blob_count()?,
            objects: self.index().objects()?.len() as u64,
        })
    }

    fn info(&self, row: ObjectRow) -> Result<ObjectInfo, StoreError> {
        let root = self.read_root(&row.id)?;
        Ok(ObjectInfo {
            id: row.id,
            version: row.version,
            created_ms: row.created_ms,
            source: PathBuf::from(std::ffi::OsStr::from_bytes(&root.source)),
            kind: root.entry_kind(),
            stats: root.stats,
            parent: root.parent.map(ObjectId),
        })
    }
}

/// The absolute, lexically normalised form of `path` (no `.` or `..`, symlinks kept), which
/// names a source across versions; relative paths are taken relative to this process's folder.
pub fn absolute(path: &Path) -> Result<PathBuf, StoreError> {
    let cwd = std::env::current_dir()
        .map_err(|source| StoreError::Source { path: path.to_path_buf(), source })?;
    Ok(absolute_in(path, &cwd))
}

/// [`absolute`] with relative paths taken relative to `cwd`.
pub fn absolute_in(path: &Path, cwd: &Path) -> PathBuf {
    let abs = cwd.join(path);
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}
