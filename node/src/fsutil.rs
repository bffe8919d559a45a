//! Small filesystem helpers: atomic writes with a mode, directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary sibling, fsync, rename, directory fsync.
/// The file gets `mode` from the start, so a secret is never readable by others, not even
/// briefly.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = sibling_tmp(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A temporary name next to `path`, unique to this process and call: two tasks of one process
/// writing the same file at once (the daemon saving its peers while a command adds one) each
/// get their own (with one per process, the second failed with "File exists").
pub fn sibling_tmp(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Moves `from` to `to`, failing if `to` exists (a pack is never written over another).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    // A hard link fails if `to` exists; the link is the rename, removing `from` tidies up.
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

/// Fsyncs a directory, so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs a file's data, then drops its pages from the page cache: bulk data the store wrote
/// (packs) is not read back soon, so its pages go back to the free list at once instead of
/// pushing other files' pages out. On a virtual machine that hands free pages back to its host
/// (free page reporting, as this project's test machine does) this also keeps the next writes
/// on pages still mapped: touching a page the host took back costs about 3.4 s per GiB here,
/// four times the disk's own write time (docs/benchmarks.md, "Pages").
pub fn sync_and_uncache(f: &File) -> io::Result<()> {
    f.sync_data()?;
    uncache(f, 0, 0);
    Ok(())
}

/// Drops the clean cached pages of `len` bytes of `f` from `offset` (0: to the end) from the
/// page cache. Only a hint: dirty pages stay, and a failure changes nothing but speed.
pub fn uncache(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its arguments; an invalid descriptor is an error return.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
    }
}

/// Pages of `f` in the page cache (for tests of the above).
#[doc(hidden)]
pub fn cached_pages(f: &File) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a shared read-only mapping of a file we hold open, unmapped below; mincore
    // writes one byte per page into `vec`, which has that many.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let page = match libc::sysconf(libc::_SC_PAGESIZE) {
            p if p > 0 => p as usize,
            _ => {
                libc::munmap(addr, len);
                return Err(io::Error::other("the page size is unknown"));
            }
        };
        let mut vec = vec![0u8; len.div_ceil(page)];
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        let err = io::Error::last_os_error();
        libc::munmap(addr, len);
        if rc != 0 {
            return Err(err);
        }
        Ok(vec.iter().filter(|b| **b & 1 == 1).count())
    }
}

/// Creates `dir` (and parents) with mode 0700 for any directory it creates.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Bytes an unprivileged user may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs writes only into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synced_and_uncached_file_leaves_the_page_cache_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let bytes: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        f.write_all(&bytes).unwrap();
        let pages = bytes.len() / 4096;
        // Freshly written: cached (on tmpfs, which keeps every page whatever it is told, this
        // test cannot work; point TMPDIR at a disk).
        assert!(
            cached_pages(&f).unwrap() > pages * 9 / 10,
            "a file just written is not in the page cache: is TMPDIR on tmpfs?"
        );
        sync_and_uncache(&f).unwrap();
        let left = cached_pages(&f).unwrap();
        assert!(left < pages / 16, "{left} of {pages} pages still cached after the drop");
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }
}
