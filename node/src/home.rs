//! The home: the directory that holds one node's keys and store.
//!
//! Layout: `node.key` and `identity.key` (mode 0600), `store/` (packs and index), and
//! `lock` while a command uses the home. A home is initialised by the first command that needs
//! it; `identity.key` is written last, so a home with it is complete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fsutil;
use crate::keys::{Identity, KeyFileError, MAX_KEY_FILE_BYTES, NodeKey};

/// Environment variable naming the home when `--home` is not given.
pub const HOME_ENV: &str = "KITH_HOME";
/// File name of the node key in a home.
pub const NODE_KEY_FILE: &str = "node.key";
/// File name of the identity key in a home.
pub const IDENTITY_FILE: &str = "identity.key";
/// Mode of key files.
pub const KEY_FILE_MODE: u32 = 0o600;
const LOCK_FILE: &str = "lock";
/// How the daemon names itself in the lock file.
pub const DAEMON_WHAT: &str = "kith up";
/// How often a patient lock is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(50);
const STORE_DIR: &str = "store";

/// Why a home could not be found, created or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// No `--home`, no `$KITH_HOME` and no platform data directory.
    #[error("no home directory: pass --home DIR or set {HOME_ENV}")]
    NoDefault,
    /// The directory exists, holds other files, and is not a kith home.
    #[error(
        "{0} is not a kith home (it is not empty and has no {IDENTITY_FILE}); choose another --home"
    )]
    NotAHome(PathBuf),
    /// `init` on a home that already has an identity.
    #[error("{0} already holds an identity; importing would replace it. Use a new --home")]
    AlreadyInitialised(PathBuf),
    /// A file in the home could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A key file is damaged.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyFileError,
    },
    /// Another process holds the home.
    #[error("{path} is in use by another kith process ({holder}); wait for it to finish")]
    Busy {
        /// The home.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HomeError + '_ {
    move |source| HomeError::Io { path: path.to_path_buf(), source }
}

/// A kith home on disk.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

/// Whether a lock is shared with other readers or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Other readers may hold the home at the same time.
    Shared,
    /// Nobody else may hold the home.
    Exclusive,
}

/// A held lock on a home; released on drop.
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

impl Home {
    /// Picks the home directory: `explicit` (from `--home`), else `$KITH_HOME`, else the platform
    /// data directory (`~/.local/share/kith` on Linux).
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, HomeError> {
        let chosen = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(HOME_ENV).filter(|p| !p.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => dirs::data_dir().map(|d| d.join("kith")).ok_or(HomeError::NoDefault)?,
            },
        };
        std::path::absolute(&chosen).map_err(|source| HomeError::Io { path: chosen, source })
    }

    /// Opens the home at `root`, initialising it with fresh keys if it does not exist yet.
    /// Returns the home and whether it was created now.
    pub fn open_or_init(root: &Path) -> Result<(Home, bool), HomeError> {
        let home = Home { root: root.to_path_buf() };
        if home.is_initialised() {
            return Ok((home, false));
        }
        let home = Home::init(root, Identity::generate())?;
        Ok((home, true))
    }

    /// Opens an initialised home.
    pub fn open(root: &Path) -> Result<Home, HomeError> {
        let home = Home { root: root.to_path_buf() };
        if home.is_initialised() { Ok(home) } else { Err(HomeError::NotAHome(root.to_path_buf())) }
    }

    /// Creates a home at `root` holding `identity` and a fresh node key. Fails if `root` already
    /// holds an identity, or is a non-empty directory that is not a home.
    pub fn init(root: &Path, identity: Identity) -> Result<Home, HomeError> {
        Self::init_with(root, |_| identity)
    }

    /// [`Home::init`], with the identity made for the new node key (a device's grant names
    /// its node key), so nothing but what the device keeps is ever written.
    pub fn init_with(
        root: &Path,
        identity_for: impl FnOnce(&NodeKey) -> Identity,
    ) -> Result<Home, HomeError> {
        let home = Home { root: root.to_path_buf() };
        if home.is_initialised() {
            return Err(HomeError::AlreadyInitialised(root.to_path_buf()));
        }
        if root.exists() && !is_empty_or_partial_home(root).map_err(io_err(root))? {
            return Err(HomeError::NotAHome(root.to_path_buf()));
        }
        fsutil::create_private_dir(root).map_err(io_err(root))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io_err(root))?;
        let node_path = home.node_key_path();
        let node = NodeKey::generate();
        fsutil::write_atomic(&node_path, &node.to_file_bytes(), KEY_FILE_MODE)
            .map_err(io_err(&node_path))?;
        let identity = identity_for(&node);
        let id_path = home.identity_path();
        fsutil::write_atomic(&id_path, &identity.to_file_bytes(), KEY_FILE_MODE)
            .map_err(io_err(&id_path))?;
        Ok(home)
    }

    /// Whether the home holds an identity (and so is complete).
    pub fn is_initialised(&self) -> bool {
        self.identity_path().is_file()
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store directory inside the home.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    /// Path of the identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// Path of the node key file.
    pub fn node_key_path(&self) -> PathBuf {
        self.root.join(NODE_KEY_FILE)
    }

    /// Reads the node key.
    pub fn node_key(&self) -> Result<NodeKey, HomeError> {
        let path = self.node_key_path();
        let bytes = read_key_file(&path)?;
        NodeKey::from_file_bytes(&bytes).map_err(|source| HomeError::KeyFile { path, source })
    }

    /// Replaces the identity key file (a data key added); only the holder of the home's lock
    /// calls this.
    pub fn write_identity(&self, identity: &Identity) -> Result<(), HomeError> {
        let path = self.identity_path();
        fsutil::write_atomic(&path, &identity.to_file_bytes(), KEY_FILE_MODE).map_err(io_err(&path))
    }

    /// Reads the identity.
    pub fn identity(&self) -> Result<Identity, HomeError> {
        let path = self.identity_path();
        let bytes = read_key_file(&path)?;
        Identity::from_file_bytes(&bytes).map_err(|source| HomeError::KeyFile { path, source })
    }

    /// Takes the home's lock, waiting up to `patience` while a short command holds it (but not
    /// when another daemon does: that holds the home until it stops).
    pub fn lock_patiently(
        &self,
        mode: LockMode,
        what: &str,
        patience: Duration,
    ) -> Result<HomeLock, HomeError> {
        let start = Instant::now();
        loop {
            match self.lock(mode, what) {
                Err(HomeError::Busy { holder, .. })
                    if !holder.contains(DAEMON_WHAT) && start.elapsed() < patience =>
                {
                    std::thread::sleep(LOCK_RETRY);
                }
                other => return other,
            }
        }
    }

    /// Takes the home's lock without waiting; `what` describes this process to others.
    pub fn lock(&self, mode: LockMode, what: &str) -> Result<HomeLock, HomeError> {
        let path = self.root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                let holder = if holder.is_empty() { "unknown".to_string() } else { holder };
                return Err(HomeError::Busy { path: self.root.clone(), holder });
            }
            return Err(HomeError::Io { path, source: err });
        }
        if mode == LockMode::Exclusive {
            let note = format!("pid {}, {what}", std::process::id());
            let _ = file.set_len(0).and_then(|_| file.write_all(note.as_bytes()));
        }
        Ok(HomeLock { _file: file })
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, HomeError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io_err(path))?;
    Ok(bytes)
}

/// A directory we may initialise: empty, or left by an init that stopped before writing the
/// identity (only a node key and temporary files).
fn is_empty_or_partial_home(root: &Path) -> io::Result<bool> {
    if !root.is_dir() {
        return Ok(false);
    }
    for entry in fs::read_dir(root)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let leftover = name == NODE_KEY_FILE || (name.starts_with('.') && name.contains(".tmp-"));
        if !leftover {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_private_key_files_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("home");
        let (home, created) = Home::open_or_init(&root).unwrap();
        assert!(created);
        for p in [home.node_key_path(), home.identity_path()] {
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let id = home.identity().unwrap().id();
        let (again, created) = Home::open_or_init(&root).unwrap();
        assert!(!created);
        assert_eq!(again.identity().unwrap().id(), id);
    }

    #[test]
    fn a_foreign_directory_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let e = Home::open_or_init(dir.path()).unwrap_err();
        assert!(matches!(e, HomeError::NotAHome(_)), "{e}");
    }

    #[test]
    fn exclusive_lock_excludes_others() {
        let dir = tempfile::tempdir().unwrap();
        let (home, _) = Home::open_or_init(dir.path()).unwrap();
        let held = home.lock(LockMode::Exclusive, "kith put").unwrap();
        let e = home.lock(LockMode::Shared, "kith ls").unwrap_err();
        assert!(e.to_string().contains("kith put"), "{e}");
        drop(held);
        home.lock(LockMode::Shared, "kith ls").unwrap();
    }
}
