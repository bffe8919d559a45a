//! Helpers: a kith home per test, running the binary, describing trees, making data.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kith_testnet::Testnet;

pub fn kith_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kith")
}

/// A temporary directory with a kith home inside.
pub struct Kith {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
}

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Kith {
    pub fn new() -> Kith {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        Kith { dir, home }
    }

    /// A path inside this test's temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(kith_bin());
        c.arg("--home").arg(&self.home);
        c.env_remove("KITH_HOME").env_remove("KITH_PASSPHRASE");
        c.current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.cmd().args(args).output().unwrap().into()
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "kith {args:?} failed:\n{}{}", out.stdout, out.stderr);
        out
    }

    #[track_caller]
    pub fn fail(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert_ne!(out.code, Some(0), "kith {args:?} should fail:\n{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("kith: error:"), "no error message: {}", out.stderr);
        out
    }

    /// Stores `path`; returns the object id.
    #[track_caller]
    pub fn put(&self, path: &Path) -> String {
        let out = self.ok(&["put", path.to_str().unwrap()]);
        let id = out.stdout.trim().to_string();
        assert_eq!(id.len(), 64, "not an id: {id:?}");
        id
    }

    /// Stores `path` and returns the JSON report.
    #[track_caller]
    pub fn put_json(&self, path: &Path) -> serde_json::Value {
        let out = self.ok(&["put", "--json", path.to_str().unwrap()]);
        serde_json::from_str(&out.stdout).unwrap()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.home.join("store")
    }

    /// Pack files in the store.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.store_dir().join("packs"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Bytes in pack files.
    pub fn pack_bytes(&self) -> u64 {
        self.packs().iter().map(|p| fs::metadata(p).unwrap().len()).sum()
    }
}

/// What a restore must reproduce of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32, mtime: (i64, i64) },
    File { mode: u32, mtime: (i64, i64), hash: String, len: u64 },
    Link { target: PathBuf, mtime: (i64, i64) },
}

/// Describes every entry under `root` (relative paths, root as "").
pub fn describe(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(abs: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let md = fs::symlink_metadata(abs).unwrap();
    let mtime = (md.mtime(), md.mtime_nsec());
    let mode = md.mode() & 0o7777;
    if md.file_type().is_symlink() {
        out.insert(rel.into(), Entry::Link { target: fs::read_link(abs).unwrap(), mtime });
    } else if md.is_dir() {
        out.insert(rel.into(), Entry::Dir { mode, mtime });
        for e in fs::read_dir(abs).unwrap() {
            let e = e.unwrap();
            walk(&e.path(), &rel.join(e.file_name()), out);
        }
    } else {
        let bytes = fs::read(abs).unwrap();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        out.insert(rel.into(), Entry::File { mode, mtime, hash, len: bytes.len() as u64 });
    }
}

/// Deterministic incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Deterministic compressible text (words from a small vocabulary).
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "pool",
        "neighbour",
        "garden",
        "bakery",
        "bread",
        "street",
        "mesh",
        "river",
        "lamp",
        "window",
        "bicycle",
        "kettle",
        "market",
        "harbour",
        "letter",
        "orchard",
    ];
    let r = random_bytes(len / 4 + 8, seed);
    let mut v = Vec::with_capacity(len + 16);
    let mut i = 0;
    while v.len() < len {
        v.extend_from_slice(WORDS[(r[i % r.len()] % 16) as usize].as_bytes());
        v.push(if r[(i + 1) % r.len()].is_multiple_of(9) { b'\n' } else { b' ' });
        i += 2;
    }
    v.truncate(len);
    v
}

pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let mut f = fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// A small tree with every kind of entry kith keeps.
pub fn sample_tree(root: &Path) {
    write(&root.join("hello.txt"), b"hello, neighbour\n");
    write(&root.join("docs/notes.md"), &text_bytes(50_000, 1));
    write(&root.join("docs/deep/er/still.bin"), &random_bytes(700_000, 2));
    write(&root.join("name with spaces & ünïcödé.txt"), b"odd names work\n");
    write(&root.join("empty-file"), b"");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("locked")).unwrap();
    write(&root.join("locked/secret"), b"s3cr3t");
    fs::set_permissions(root.join("locked/secret"), fs::Permissions::from_mode(0o400)).unwrap();
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o500)).unwrap();
    write(&root.join("script.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("link-to-hello")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at/all", root.join("dangling")).unwrap();
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("hello.txt"), old).unwrap();
    filetime::set_symlink_file_times(root.join("dangling"), old, old).unwrap();
    filetime::set_file_mtime(root.join("empty-dir"), old).unwrap();
}

/// Polls `cond` until it holds or `limit` passes.
#[track_caller]
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// Mounts a tmpfs of `size` at `dir` (we run as root); unmounted on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root: the test suite runs as root");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A testnet of `n` nodes running this build's kith.
pub fn testnet(n: usize, layout: kith_testnet::Layout) -> kith_testnet::Testnet {
    kith_testnet::Testnet::new(Path::new(kith_bin()), n, layout).unwrap()
}

/// A POST to a daemon's control socket with raw headers; returns the status code and body.
pub fn control_post(home: &Path, headers: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(home.join("control.sock")).unwrap();
    write!(
        s,
        "POST /v1/run HTTP/1.1\r\nHost: kith\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let out = String::from_utf8_lossy(&raw).into_owned();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

/// A response, as read off the socket.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes and reads the whole answer (the request asks to close).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
}

pub fn parse(buf: &[u8]) -> Resp {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Resp { status, headers, body: buf[end..].to_vec() }
}

/// A GET (or another method) with extra header lines.
pub fn req(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> Resp {
    let mut r = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        r.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    raw(addr, r.as_bytes())
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    req(addr, "GET", path, &[])
}

pub fn http(net: &Testnet, i: usize) -> SocketAddr {
    net.json(i, &["status"]).unwrap()["http"].as_str().unwrap().parse().unwrap()
}

/// Nodes 1.. share node 0's identity (one person's devices); all start.
pub fn devices(n: usize, layout: kith_testnet::Layout) -> kith_testnet::Testnet {
    let mut net = testnet(n, layout);
    net.kith_ok(0, &["init"]).unwrap();
    for i in 1..n {
        net.share_identity(i, 0).unwrap();
    }
    net.start_all().unwrap();
    for i in 0..n {
        let want = n - 1;
        net.wait_for(std::time::Duration::from_secs(20), "devices to see each other", |net| {
            Ok(net.peers(i)?.iter().filter(|p| p["state"] == "reachable").count() >= want)
        })
        .unwrap();
    }
    net
}

/// Three running nodes: ada's pool `street` with `replicas` copies, bob and cy in it, each of
/// them offering 1 GiB in a zone of their own (ada offers nothing).
pub fn street_of_three(replicas: u32) -> kith_testnet::Testnet {
    let mut net = testnet(3, kith_testnet::Layout::Loopback);
    for i in 0..3 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    let r = replicas.to_string();
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada", "--replicas", &r]).unwrap();
    for (i, name) in [(1, "bob"), (2, "cy")] {
        let ticket = net.kith_ok(0, &["pool", "invite"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
        net.kith_ok(i, &["offer", "--storage", "1GiB", "--zone", &format!("z{i}")]).unwrap();
    }
    net
}

/// An iroh endpoint of the test's own on loopback (a peer the test plays), with no relay and
/// no address lookup.
pub async fn endpoint() -> iroh::Endpoint {
    iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap()
}

/// How to reach node `i`, from its ticket.
pub fn addr_of(net: &Testnet, i: usize) -> iroh::EndpointAddr {
    let t: kith_node::net::ticket::NodeTicket =
        net.kith_ok(i, &["id", "--ticket"]).unwrap().trim().parse().unwrap();
    iroh::EndpointAddr::from_parts(t.id, t.addrs.into_iter().map(iroh::TransportAddr::Ip))
}
