//! Files of the pools crate: written atomically, readable by this user only; and the one store
//! of documents on disk ([`DocFiles`]), which every kind of document (pools, ledgers, identity
//! documents) is kept in.

use std::path::{Path, PathBuf};

use kith_crdt::Schema;

use crate::pool::PoolError;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, directory fsync), mode
/// 0600: documents name members, devices and sites.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    kith_node::fsutil::write_atomic(path, bytes, 0o600)
}

/// A document kept on disk: its kind, and how it reads and writes itself.
pub(crate) trait Stored: Sized {
    /// Its kind (the files' extension).
    type Kind: Schema;
    /// Reads it from a file's bytes.
    fn load(bytes: &[u8]) -> Result<Self, String>;
    /// Its file's bytes.
    fn save(&mut self) -> Vec<u8>;
}

/// A folder of documents: `NAME.EXT`, EXT the kind's. Writes are atomic (mode 0600, the folder
/// made on first use); a file that does not read is reported and left in place, never deleted.
#[derive(Debug, Clone)]
pub(crate) struct DocFiles {
    dir: PathBuf,
}

impl DocFiles {
    /// The documents in `dir`.
    pub(crate) fn new(dir: PathBuf) -> DocFiles {
        DocFiles { dir }
    }

    /// The folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where document `name` of kind `T` is kept.
    pub(crate) fn path<T: Stored>(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{}", T::Kind::EXT))
    }

    /// Keeps `doc` as `name`; the path written.
    pub(crate) fn write<T: Stored>(&self, name: &str, doc: &mut T) -> std::io::Result<PathBuf> {
        let path = self.path::<T>(name);
        std::fs::create_dir_all(&self.dir)?;
        write_atomic(&path, &doc.save())?;
        Ok(path)
    }

    /// Document `name`, `Ok(None)` if there is none; an error names the file and why it does
    /// not read (damaged, or the disk failed).
    pub(crate) fn read<T: Stored>(&self, name: &str) -> Result<Option<T>, PoolError> {
        let path = self.path::<T>(name);
        match std::fs::read(&path) {
            Ok(b) => T::load(&b)
                .map(Some)
                .map_err(|e| PoolError::Damaged(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PoolError::Policy(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Every document of kind `T` in the folder (none if there is no folder); one that does
    /// not read is logged and skipped. A folder that cannot be listed is an error.
    pub(crate) fn read_all<T: Stored>(&self) -> std::io::Result<Vec<T>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some(T::Kind::EXT) {
                continue;
            }
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| T::load(&b)) {
                Ok(d) => out.push(d),
                Err(e) => tracing::error!(
                    file = %path.display(), kind = T::Kind::KIND, error = %e,
                    "cannot read a document; left in place"
                ),
            }
        }
        Ok(out)
    }
}
