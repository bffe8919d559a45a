//! A 4 GiB file goes in and out with bounded resident memory.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use crate::util::*;

/// What docs/architecture.md promises for put and get, whatever the file size.
const RSS_LIMIT: u64 = 200 << 20;
const SIZE: u64 = 4 << 30;

/// Runs `cmd` and returns its peak resident memory in bytes (wait4's rusage).
fn peak_rss(mut cmd: Command, stdout: impl FnOnce(&mut std::process::Child)) -> u64 {
    let mut child = cmd.stderr(Stdio::inherit()).spawn().unwrap();
    stdout(&mut child);
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 fills `status` and `usage` for our own child.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(std::process::ExitStatus::from_raw(status).success(), "{cmd:?} failed");
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn a_4_gib_file_streams_through_put_and_get_in_bounded_memory() {
    let k = Kith::new();
    let big = k.path("big.bin");
    let mut xof = blake3::Hasher::new().update(b"kith large test").finalize_xof();
    let mut source_hash = blake3::Hasher::new();
    {
        let mut out = BufWriter::new(File::create(&big).unwrap());
        let mut buf = vec![0u8; 8 << 20];
        for _ in 0..SIZE / buf.len() as u64 {
            xof.fill(&mut buf);
            source_hash.update(&buf);
            out.write_all(&buf).unwrap();
        }
    }
    let source_hash = source_hash.finalize();

    let mut put = k.cmd();
    put.args(["put", big.to_str().unwrap()]).stdout(Stdio::piped());
    let mut id = String::new();
    let put_rss = peak_rss(put, |c| {
        c.stdout.take().unwrap().read_to_string(&mut id).unwrap();
    });
    let id = id.trim().to_string();
    std::fs::remove_file(&big).unwrap();

    let mut get = k.cmd();
    get.args(["get", &id, "-o", "-"]).stdout(Stdio::piped());
    let mut restored = blake3::Hasher::new();
    let mut n = 0u64;
    let get_rss = peak_rss(get, |c| {
        let mut out = c.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let r = out.read(&mut buf).unwrap();
            if r == 0 {
                break;
            }
            n += r as u64;
            restored.update(&buf[..r]);
        }
    });
    assert_eq!(n, SIZE);
    assert_eq!(restored.finalize(), source_hash, "restored bytes differ");
    eprintln!("peak RSS: put {} MiB, get {} MiB", put_rss >> 20, get_rss >> 20);
    assert!(put_rss < RSS_LIMIT, "put peaked at {} MiB", put_rss >> 20);
    assert!(get_rss < RSS_LIMIT, "get peaked at {} MiB", get_rss >> 20);
}

/// A large restore is written back a window at a time and leaves the page cache as it goes
/// (docs/architecture.md, "The page cache"): the restored file is whole, most of its pages
/// are no longer cached when `get` returns (without the write-back all of them are), and
/// neither are the packs it read, which the put left cached.
#[test]
fn a_large_restore_is_written_back_as_it_goes_and_leaves_the_page_cache() {
    let k = Kith::new();
    let src = k.path("big.bin");
    let bytes = random_bytes(100 << 20, 77);
    std::fs::write(&src, &bytes).unwrap();
    let id = k.put(&src);
    // A put's packs stay cached; the restore drops what it reads of a large file.
    let packs = || -> (usize, usize) {
        let mut cached_and_all = (0, 0);
        for e in std::fs::read_dir(k.home.join("store/packs")).unwrap() {
            let f = File::open(e.unwrap().path()).unwrap();
            cached_and_all.0 += kith_node::fsutil::cached_pages(&f).unwrap();
            cached_and_all.1 += (f.metadata().unwrap().len() as usize).div_ceil(4096);
        }
        cached_and_all
    };
    let (cached, all) = packs();
    assert!(cached > all * 9 / 10, "{cached} of {all} pages of the packs cached after the put");
    let out = k.path("out.bin");
    k.ok(&["get", &id, "-o", out.to_str().unwrap()]);
    let (cached, all) = packs();
    assert!(cached < all / 10, "{cached} of {all} pages of the packs cached after the restore");
    let f = File::open(&out).unwrap();
    let pages = bytes.len() / 4096;
    let cached = kith_node::fsutil::cached_pages(&f).unwrap();
    assert!(cached < pages * 6 / 10, "{cached} of {pages} pages of the restored file cached");
    assert!(std::fs::read(&out).unwrap() == bytes, "restored bytes differ");
}
