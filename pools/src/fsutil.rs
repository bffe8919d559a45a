//! Files of the pools crate: written atomically, readable by this user only.

use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, directory fsync), mode
/// 0600: documents name members, devices and sites.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    kith_node::fsutil::write_atomic(path, bytes, 0o600)
}
