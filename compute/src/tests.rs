//! Jobs written in WebAssembly text, run in the sandbox: what they may do, what they may not,
//! and that two runs of one job agree byte for byte.

use super::*;

/// A WASI command whose `_start` is `body` (with `fd_write`, `fd_read`, `path_open`,
/// `clock_time_get`, `random_get` and `proc_exit` imported, a page of memory, and `data`).
fn wat(body: &str, data: &str, extra_imports: &str) -> Vec<u8> {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  {extra_imports}
  (memory (export "memory") 1)
  {data}
  ;; Writes len bytes at ptr to fd (the iovec at 0).
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func (export "_start") {body}))"#
    )
    .into_bytes()
}

fn job<'a>(module: &'a [u8], input: Option<&'a Path>) -> Job<'a> {
    Job {
        module,
        args: &[],
        env: &[],
        input,
        stdin: None,
        seed: [7; 32],
        limits: Limits {
            fuel: 10_000_000,
            memory: 16 << 20,
            output: 1 << 20,
            wall: Duration::from_secs(60),
        },
        cancel: None,
    }
}

#[test]
fn a_job_writes_its_standard_output_and_two_runs_agree() {
    let s = Sandbox::new().unwrap();
    let m = wat(
        r#"(call $write (i32.const 1) (i32.const 64) (i32.const 6))"#,
        r#"(data (i32.const 64) "hello\n")"#,
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let a = s.run(&job(&m, None), &dir.path().join("a")).unwrap();
    let b = s.run(&job(&m, None), &dir.path().join("b")).unwrap();
    assert_eq!(std::fs::read(dir.path().join("a/stdout")).unwrap(), b"hello\n");
    assert_eq!((a.exit, a.files, a.bytes), (0, 1, 6));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.fuel, b.fuel, "fuel is counted the same on every run");
    assert!(a.fuel > 0);
}

#[test]
fn a_job_reads_its_input_and_writes_its_output_folder_and_nothing_else() {
    let s = Sandbox::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.txt"), b"abc").unwrap();
    // fd 3 is /input, fd 4 /output. Open /input/a.txt, read it, write it to /output/b.txt.
    let copy = r#"
      (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 5) (i32.const 0)
        (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 24)))
      (i32.store (i32.const 0) (i32.const 128)) (i32.store (i32.const 4) (i32.const 64))
      (drop (call $fd_read (i32.load (i32.const 24)) (i32.const 0) (i32.const 1) (i32.const 28)))
      (drop (call $path_open (i32.const 4) (i32.const 0) (i32.const 72) (i32.const 5) (i32.const 9)
        (i64.const 0x1FFFFFFF) (i64.const 0x1FFFFFFF) (i32.const 0) (i32.const 32)))
      (call $write (i32.load (i32.const 32)) (i32.const 128) (i32.load (i32.const 28)))
      ;; Writing into /input is refused: the error number goes to stdout.
      (i32.store8 (i32.const 200) (i32.add (i32.const 48)
        (call $path_open (i32.const 3) (i32.const 0) (i32.const 80) (i32.const 5) (i32.const 9)
          (i64.const 0x1FFFFFFF) (i64.const 0x1FFFFFFF) (i32.const 0) (i32.const 36))))
      (call $write (i32.const 1) (i32.const 200) (i32.const 1))"#;
    let m = wat(
        copy,
        r#"(data (i32.const 64) "a.txt") (data (i32.const 72) "b.txt") (data (i32.const 80) "c.txt")"#,
        "",
    );
    let r = s.run(&job(&m, Some(&input)), &dir.path().join("out")).unwrap();
    assert_eq!(std::fs::read(dir.path().join("out/output/b.txt")).unwrap(), b"abc");
    let refused = std::fs::read(dir.path().join("out/stdout")).unwrap();
    assert_ne!(refused, b"0", "the job wrote into its input");
    assert!(!input.join("c.txt").exists());
    assert_eq!((r.files, r.bytes), (2, 4));
}

#[test]
fn clocks_and_random_bytes_are_the_same_on_every_run_of_a_job() {
    let s = Sandbox::new().unwrap();
    // Realtime clock (8 bytes), then 16 random bytes, to stdout.
    let body = r#"
      (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 64)))
      (drop (call $random (i32.const 72) (i32.const 16)))
      (call $write (i32.const 1) (i32.const 64) (i32.const 24))"#;
    let m = wat(body, "", "");
    let dir = tempfile::tempdir().unwrap();
    let a = s.run(&job(&m, None), &dir.path().join("a")).unwrap();
    let b = s.run(&job(&m, None), &dir.path().join("b")).unwrap();
    assert_eq!(a.hash, b.hash);
    let out = std::fs::read(dir.path().join("a/stdout")).unwrap();
    let ns = u64::from_le_bytes(out[..8].try_into().unwrap());
    assert_eq!(ns, JOB_EPOCH.as_nanos() as u64, "the job's clock reads its fixed start");
    let mut other = job(&m, None);
    other.seed = [8; 32];
    let c = s.run(&other, &dir.path().join("c")).unwrap();
    assert_ne!(a.hash, c.hash, "another job's seed gives other random bytes");
}

#[test]
fn a_job_that_loops_runs_out_of_fuel_and_one_that_eats_memory_is_stopped() {
    let s = Sandbox::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spin = wat("(loop $l (br $l))", "", "");
    match s.run(&job(&spin, None), &dir.path().join("a")) {
        Err(ComputeError::OutOfFuel(10_000_000)) => {}
        other => panic!("{other:?}"),
    }
    let eat = wat("(loop $l (drop (memory.grow (i32.const 16))) (br $l))", "", "");
    match s.run(&job(&eat, None), &dir.path().join("b")) {
        Err(ComputeError::Memory(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn modules_that_import_the_network_or_anything_else_are_refused_before_they_run() {
    let s = Sandbox::new().unwrap();
    let sock = wat(
        "",
        "",
        r#"(import "wasi_snapshot_preview1" "sock_send" (func (param i32 i32 i32 i32 i32) (result i32)))"#,
    );
    let e = s.check(&sock).unwrap_err();
    assert!(e.to_string().contains("sock_send"), "{e}");
    let env = wat("", "", r#"(import "env" "now" (func (result i64)))"#);
    assert!(s.check(&env).unwrap_err().to_string().contains("env::now"));
    assert!(matches!(s.check(b"not wasm"), Err(ComputeError::Invalid(_))));
    assert!(matches!(s.check(b"(module)"), Err(ComputeError::NoStart)));
    let exit = wat("(call $exit (i32.const 3))", "", "");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(s.run(&job(&exit, None), dir.path()).unwrap().exit, 3);
}

#[test]
fn a_job_that_writes_without_end_or_runs_past_its_wall_time_is_stopped_while_it_runs() {
    let s = Sandbox::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 32 KiB per write, forever, with fuel enough for gigabytes.
    let flood = wat(
        "(loop $l (call $write (i32.const 1) (i32.const 1024) (i32.const 32768)) (br $l))",
        "",
        "",
    );
    let mut j = job(&flood, None);
    j.limits.fuel = u64::MAX / 2;
    j.limits.output = 4 << 20;
    match s.run(&j, &dir.path().join("a")) {
        Err(ComputeError::Output(wrote, 4194304)) => {
            // Stopped within a tick or two of the bound, not at the end of the disk.
            assert!(wrote < 4 << 30, "{wrote}");
        }
        other => panic!("{other:?}"),
    }
    let spin = wat("(loop $l (br $l))", "", "");
    let mut j = job(&spin, None);
    j.limits.fuel = u64::MAX / 2;
    j.limits.wall = Duration::from_millis(300);
    match s.run(&j, &dir.path().join("b")) {
        Err(ComputeError::TimedOut(_)) => {}
        other => panic!("{other:?}"),
    }
    let sleeps = wat(
        "",
        "",
        r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func (param i32 i32 i32 i32) (result i32)))"#,
    );
    assert!(s.check(&sleeps).unwrap_err().to_string().contains("poll_oneoff"));
}

#[test]
fn a_folder_lists_in_name_order_with_no_host_inodes_or_times_on_every_runner() {
    let s = Sandbox::new().unwrap();
    let m = wat(
        r#"
      (drop (call $readdir (i32.const 3) (i32.const 1024) (i32.const 4096) (i64.const 0) (i32.const 32)))
      (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 32)))
      (drop (call $readdir (i32.const 3) (i32.const 8192) (i32.const 40) (i64.const 3) (i32.const 32)))
      (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 32)))
      (drop (call $pstat (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 512)))
      (call $write (i32.const 1) (i32.const 512) (i32.const 64))
      (drop (call $fstat (i32.const 3) (i32.const 600)))
      (call $write (i32.const 1) (i32.const 600) (i32.const 64))"#,
        r#"(data (i32.const 64) "a")"#,
        r#"(import "wasi_snapshot_preview1" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $pstat (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fstat (param i32 i32) (result i32)))"#,
    );
    let dir = tempfile::tempdir().unwrap();
    // Two runners' copies of one input: made in another order, at other times.
    let make = |name: &str, order: &[&str], age_s: u64| {
        let input = dir.path().join(name);
        std::fs::create_dir(&input).unwrap();
        for n in order {
            if *n == "d" {
                std::fs::create_dir(input.join(n)).unwrap();
            } else {
                std::fs::write(input.join(n), b"abc").unwrap();
                let f = std::fs::File::options().write(true).open(input.join(n)).unwrap();
                f.set_modified(std::time::SystemTime::now() - Duration::from_secs(age_s)).unwrap();
            }
        }
        input
    };
    let one = make("one", &["z", "a", "m", "d"], 10);
    let two = make("two", &["m", "d", "a", "z"], 99_999);
    let a = s.run(&job(&m, Some(&one)), &dir.path().join("ra")).unwrap();
    let b = s.run(&job(&m, Some(&two)), &dir.path().join("rb")).unwrap();
    assert_eq!(a.hash, b.hash, "the same listing and attributes on both");
    let out = std::fs::read(dir.path().join("ra/stdout")).unwrap();
    // The whole listing: ., .., then names in order, cookies 1.., no inode numbers.
    let (mut at, mut names) = (0, Vec::new());
    while names.len() < 6 {
        let next = u64::from_le_bytes(out[at..at + 8].try_into().unwrap());
        let ino = u64::from_le_bytes(out[at + 8..at + 16].try_into().unwrap());
        let len = u32::from_le_bytes(out[at + 16..at + 20].try_into().unwrap()) as usize;
        assert_eq!((next, ino), (names.len() as u64 + 1, 0));
        names.push(String::from_utf8(out[at + 24..at + 24 + len].to_vec()).unwrap());
        at += 24 + len;
    }
    assert_eq!(names, [".", "..", "a", "d", "m", "z"]);
    // A page of 40 bytes from cookie 3: `d` (a directory) whole, and the next entry cut.
    let page = &out[at..at + 40];
    assert_eq!(u64::from_le_bytes(page[0..8].try_into().unwrap()), 4);
    assert_eq!((page[20], page[24]), (3, b'd'));
    assert_eq!(u64::from_le_bytes(page[25..33].try_into().unwrap()), 5);
    // /input/a: no device or inode, one link, its size, every time the job's epoch.
    let st = &out[at + 40..at + 104];
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let epoch = JOB_EPOCH.as_nanos() as u64;
    assert_eq!([word(st, 0), word(st, 8), word(st, 24), word(st, 32)], [0, 0, 1, 3]);
    assert_eq!([word(st, 40), word(st, 48), word(st, 56)], [epoch; 3]);
    // /input itself: a directory of size 0 (its size on disk depends on the file system).
    let st = &out[at + 104..at + 168];
    assert_eq!((st[16], word(st, 32), word(st, 48)), (3, 0, epoch));
    // A folder larger than the job's buffer is read through it page by page, then sorted:
    // its first page is the first names in order.
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    let mut want: Vec<String> = (0..300).map(|i| format!("file-{:05}", (i * 7919) % 300)).collect();
    for n in &want {
        std::fs::write(many.join(n), b"x").unwrap();
    }
    s.run(&job(&m, Some(&many)), &dir.path().join("rc")).unwrap();
    let out = std::fs::read(dir.path().join("rc/stdout")).unwrap();
    let (mut at, mut got) = (0, Vec::new());
    while at + 24 <= 4096 {
        let len = u32::from_le_bytes(out[at + 16..at + 20].try_into().unwrap()) as usize;
        if at + 24 + len > 4096 {
            break;
        }
        got.push(String::from_utf8(out[at + 24..at + 24 + len].to_vec()).unwrap());
        at += 24 + len;
    }
    want.sort();
    want.insert(0, "..".into());
    want.insert(0, ".".into());
    assert!(got.len() > 100, "{}", got.len());
    assert_eq!(got, want[..got.len()]);
}
