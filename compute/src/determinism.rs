//! What the file system shows a job, made the same on every runner: directory entries in
//! name order with no inode numbers, and file attributes without the runner's device, inode,
//! link count, directory size or times (every time reads as the job's epoch).
//!
//! wasmtime's WASI preview 1 answers `fd_readdir` in the host file system's order (hash order
//! on ext4, creation order on tmpfs) with host inode numbers, and `fd_filestat_get` /
//! `path_filestat_get` with the host's real attributes: two honest runners would disagree on
//! a job that lists a folder or reads a file's time. These calls are wrapped: the original
//! runs, and what it wrote is rewritten before the job sees it.

use std::collections::HashMap;

use wasmtime::{Caller, Linker, Memory};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1 as wasi;
use wasmtime_wasi::runtime::in_tokio;
use wiggle::GuestMemory;

use crate::{JOB_EPOCH, WASI};

/// Entries of a directory listing (name, WASI file type), in name order, `.` and `..` first.
pub(crate) type Listing = Vec<(Vec<u8>, u8)>;

/// The host state these wrappers keep: the listing each directory descriptor is being read
/// from (made when a job starts reading it at cookie 0).
#[derive(Default)]
pub(crate) struct Listings(HashMap<i32, Listing>);

/// Size of a WASI `dirent` header: next cookie (u64), inode (u64), name length (u32), type
/// (u8), padding.
const DIRENT: usize = 24;
/// Most bytes of names a listing may hold (a job has at most 10,000 input files).
const MAX_LISTING: usize = 16 << 20;
/// WASI's directory file type.
const DIRECTORY: u8 = 3;

/// Replaces `fd_readdir`, `fd_filestat_get` and `path_filestat_get` in `linker` (which has
/// WASI preview 1 in it) with wrappers around wasmtime-wasi's own.
pub(crate) fn wrap<T: 'static>(
    linker: &mut Linker<T>,
    parts: fn(&mut T) -> (&mut WasiP1Ctx, &mut Listings),
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        move |mut c: Caller<'_, T>, fd: i32, buf: i32| -> wasmtime::Result<i32> {
            let r =
                with_wasi(&mut c, parts, |w, m| in_tokio(wasi::fd_filestat_get(w, m, fd, buf)))?;
            if r == 0 {
                fix_filestat(&mut c, buf)?;
            }
            Ok(r)
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_get",
        move |mut c: Caller<'_, T>, fd: i32, flags: i32, path: i32, len: i32, buf: i32| {
            let r = with_wasi(&mut c, parts, |w, m| {
                in_tokio(wasi::path_filestat_get(w, m, fd, flags, path, len, buf))
            })?;
            if r == 0 {
                fix_filestat(&mut c, buf)?;
            }
            Ok(r)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_readdir",
        move |mut c: Caller<'_, T>, fd: i32, buf: i32, len: i32, cookie: i64, used: i32| {
            readdir_sorted(&mut c, parts, (fd, buf, len, cookie, used))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs a WASI function of wasmtime-wasi on the job's context and memory.
fn with_wasi<T, R>(
    c: &mut Caller<'_, T>,
    parts: fn(&mut T) -> (&mut WasiP1Ctx, &mut Listings),
    f: impl FnOnce(&mut WasiP1Ctx, &mut GuestMemory<'_>) -> wiggle::error::Result<R>,
) -> wasmtime::Result<R> {
    let mem = memory(c)?;
    let (bytes, state) = mem.data_and_store_mut(&mut *c);
    let mut guest = GuestMemory::Unshared(bytes);
    f(parts(state).0, &mut guest)
}

fn memory<T>(c: &mut Caller<'_, T>) -> wasmtime::Result<Memory> {
    c.get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the job exports no memory"))
}

/// Rewrites the `filestat` at `at`: device, inode and times of the job's world, one link,
/// directories of size 0.
fn fix_filestat<T>(c: &mut Caller<'_, T>, at: i32) -> wasmtime::Result<()> {
    let mem = memory(c)?;
    let mut st = [0u8; 64];
    mem.read(&mut *c, at as u32 as usize, &mut st)?;
    let epoch = JOB_EPOCH.as_nanos() as u64;
    st[0..8].copy_from_slice(&0u64.to_le_bytes()); // dev
    st[8..16].copy_from_slice(&0u64.to_le_bytes()); // ino
    st[24..32].copy_from_slice(&1u64.to_le_bytes()); // nlink
    if st[16] == DIRECTORY {
        st[32..40].copy_from_slice(&0u64.to_le_bytes()); // size
    }
    for t in [40, 48, 56] {
        st[t..t + 8].copy_from_slice(&epoch.to_le_bytes());
    }
    mem.write(&mut *c, at as u32 as usize, &st)?;
    Ok(())
}

/// `fd_readdir` from a listing in name order. At cookie 0 the whole directory is read through
/// the original call (page by page, in the job's own buffer) and kept; later cookies page
/// through what was kept. A buffer too small for one entry gets the original's answer (the
/// job grows its buffer and asks again, as wasi-libc does).
fn readdir_sorted<T>(
    c: &mut Caller<'_, T>,
    parts: fn(&mut T) -> (&mut WasiP1Ctx, &mut Listings),
    (fd, buf, len, cookie, used): (i32, i32, i32, i64, i32),
) -> wasmtime::Result<i32> {
    let orig = |c: &mut Caller<'_, T>, cookie: i64| {
        with_wasi(c, parts, |w, m| in_tokio(wasi::fd_readdir(w, m, fd, buf, len, cookie, used)))
    };
    fn listings<T>(
        t: &mut T,
        parts: fn(&mut T) -> (&mut WasiP1Ctx, &mut Listings),
    ) -> &mut Listings {
        parts(t).1
    }
    let mem = memory(c)?;
    let (base, cap) = (buf as u32 as usize, len as u32 as usize);
    if cookie == 0 || !listings(c.data_mut(), parts).0.contains_key(&fd) {
        let mut all: Listing = Vec::new();
        let mut names = 0usize;
        let mut next: i64 = 0;
        loop {
            let r = orig(c, next)?;
            if r != 0 {
                return Ok(r);
            }
            let mut n = [0u8; 4];
            mem.read(&mut *c, used as u32 as usize, &mut n)?;
            let got = u32::from_le_bytes(n) as usize;
            let mut page = vec![0u8; got];
            mem.read(&mut *c, base, &mut page)?;
            let mut at = 0;
            let mut whole = 0;
            while at + DIRENT <= page.len() {
                let d_next = i64::from_le_bytes(page[at..at + 8].try_into().expect("8"));
                let namlen = u32::from_le_bytes(page[at + 16..at + 20].try_into().expect("4"));
                let end = at + DIRENT + namlen as usize;
                if end > page.len() {
                    break;
                }
                all.push((page[at + DIRENT..end].to_vec(), page[at + 20]));
                names += namlen as usize + DIRENT;
                next = d_next;
                whole += 1;
                at = end;
            }
            if names > MAX_LISTING {
                return Ok(wasi_errno_nomem());
            }
            if got < cap {
                break; // the end of the directory
            }
            if whole == 0 {
                // Not even one entry fits: the original's answer, as it is.
                return orig(c, cookie);
            }
        }
        let (mut dots, mut rest): (Listing, Listing) =
            all.into_iter().partition(|(n, _)| n == b"." || n == b"..");
        dots.sort();
        rest.sort();
        dots.extend(rest);
        listings(c.data_mut(), parts).0.insert(fd, dots);
    }
    // Serialise from `cookie`, as the original does: each entry's header then its name, cut
    // where the buffer ends.
    let listing = listings(c.data_mut(), parts).0.get(&fd).cloned().unwrap_or_default();
    let mut out = Vec::with_capacity(cap.min(1 << 20));
    for (i, (name, kind)) in listing.iter().enumerate().skip(cookie.max(0) as usize) {
        let mut d = [0u8; DIRENT];
        d[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        d[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        d[20] = *kind;
        let room = cap - out.len();
        out.extend_from_slice(&d[..room.min(DIRENT)]);
        if out.len() == cap {
            break;
        }
        let room = cap - out.len();
        out.extend_from_slice(&name[..room.min(name.len())]);
        if out.len() == cap {
            break;
        }
    }
    mem.write(&mut *c, base, &out)?;
    mem.write(&mut *c, used as u32 as usize, &(out.len() as u32).to_le_bytes())?;
    Ok(0)
}

/// WASI's `ENOMEM`.
fn wasi_errno_nomem() -> i32 {
    48
}
