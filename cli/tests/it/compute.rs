//! Compute: a job run here, and the same job run on two members' nodes of a pool that must
//! agree on its result; what a job may not do, refused with the reason.

use crate::util::*;

/// A WASI command: `body` is its `_start` (with `$write fd ptr len`, `fd_read`, `path_open`).
fn wat(body: &str, data: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {data}
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func (export "_start") {body}))"#
    )
}

/// Reads /input/a.txt (fd 3), writes it reversed... as is, to /output/b.txt (fd 4), then
/// "done\n" to standard output.
fn copy_job() -> String {
    wat(
        r#"
      (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 5) (i32.const 0)
        (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 24)))
      (i32.store (i32.const 0) (i32.const 256)) (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.load (i32.const 24)) (i32.const 0) (i32.const 1) (i32.const 28)))
      (drop (call $path_open (i32.const 4) (i32.const 0) (i32.const 72) (i32.const 5) (i32.const 9)
        (i64.const 0x1FFFFFFF) (i64.const 0x1FFFFFFF) (i32.const 0) (i32.const 32)))
      (call $write (i32.load (i32.const 32)) (i32.const 256) (i32.load (i32.const 28)))
      (call $write (i32.const 1) (i32.const 80) (i32.const 5))"#,
        r#"(data (i32.const 64) "a.txt") (data (i32.const 72) "b.txt") (data (i32.const 80) "done\n")"#,
    )
}

#[test]
fn a_job_runs_here_and_on_two_members_nodes_that_agree_and_bad_jobs_are_refused_with_why() {
    let mut net = street_of_three(2);
    let dir = net.dir().to_path_buf();
    let job = dir.join("copy.wat");
    write(&job, copy_job().as_bytes());
    let input = dir.join("in");
    write(&input.join("a.txt"), b"bread and butter");

    // Here, on ada's node.
    let here = dir.join("here");
    let v = net
        .json(
            0,
            &[
                "job",
                "run",
                job.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "-o",
                here.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert_eq!(v["exit"], 0, "{v}");
    assert_eq!(std::fs::read(here.join("stdout")).unwrap(), b"done\n");
    assert_eq!(std::fs::read(here.join("output/b.txt")).unwrap(), b"bread and butter");
    assert!(v["runners"].as_array().unwrap().is_empty(), "{v}");
    // The result is an object of ada's store.
    let listed = net.kith_ok(0, &["ls"]).unwrap();
    assert!(listed.contains(&v["object"].as_str().unwrap()[..12]), "{listed}");

    // Nobody lends CPU yet: the pool says so, and how to.
    let pooled = dir.join("pooled");
    let args = |out: &std::path::Path| {
        vec![
            "job".to_string(),
            "run".into(),
            job.display().to_string(),
            "--pool".into(),
            "street".into(),
            "--redundancy".into(),
            "2".into(),
            "--memory".into(),
            "32MiB".into(),
            "--input".into(),
            input.display().to_string(),
            "-o".into(),
            out.display().to_string(),
        ]
    };
    let a: Vec<String> = args(&pooled);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = net.kith(0, &a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("kith offer POOL --cpu N"), "{err}");

    // Bob and cy lend a core each; the job runs on both, and they agree.
    for i in [1, 2] {
        net.kith_ok(i, &["offer", "--cpu", "1", "--memory", "64MiB"]).unwrap();
    }
    net.wait_for(std::time::Duration::from_secs(30), "ada to see both offers", |net| {
        let v = net.json(0, &["pool", "show"])?;
        let lending = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["nodes"].as_array().unwrap().clone())
            .filter(|n| n["cpu"] == 1)
            .count();
        Ok(lending == 2)
    })
    .unwrap();
    let v = net.json(0, &a).unwrap();
    let runners = v["runners"].as_array().unwrap();
    assert_eq!(runners.len(), 2, "{v}");
    assert!(runners.iter().all(|r| r["answer"] == "agreed"), "{v}");
    let ids: Vec<String> = (1..3).map(|i| net.id(i).unwrap()).collect();
    for r in runners {
        assert!(ids.contains(&r["node"].as_str().unwrap().to_string()), "{v}");
    }
    assert_eq!(std::fs::read(pooled.join("output/b.txt")).unwrap(), b"bread and butter");
    let here_hash = net
        .json(
            0,
            &[
                "job",
                "run",
                job.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "-o",
                dir.join("again").to_str().unwrap(),
            ],
        )
        .unwrap()["hash"]
        .clone();
    assert_eq!(v["hash"], here_hash, "the pool's result is the one this node computes");
    let shown = net.kith_ok(0, &["pool", "show"]).unwrap();
    assert!(shown.contains("1 jobs of 64.0 MiB"), "{shown}");

    // A job that loops: both runners stop it at its fuel, alike, and nothing is kept.
    let spin = dir.join("spin.wat");
    write(&spin, wat("(loop $l (br $l))", "").as_bytes());
    let out = net.kith(
        0,
        &[
            "job",
            "run",
            spin.to_str().unwrap(),
            "--pool",
            "street",
            "--memory",
            "32MiB",
            "--fuel",
            "1000000",
            "-o",
            dir.join("spun").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ran out of fuel after 1000000"), "{err}");
    assert!(!dir.join("spun").exists());
    // One that asks for the network is refused before it runs, here and there.
    let sock = dir.join("sock.wat");
    write(
        &sock,
        br#"(module (import "wasi_snapshot_preview1" "sock_send" (func (param i32 i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1) (func (export "_start")))"#,
    );
    for pool in [false, true] {
        let o = dir.join(format!("sock-{pool}"));
        let mut args = vec!["job", "run", sock.to_str().unwrap(), "-o", o.to_str().unwrap()];
        if pool {
            args.extend(["--pool", "street", "--memory", "32MiB"]);
        }
        let out = net.kith(0, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("sock_send"), "{err}");
    }
    // More memory than anyone lends: refused by name.
    let out = net.kith(
        0,
        &[
            "job",
            "run",
            job.to_str().unwrap(),
            "--pool",
            "street",
            "--memory",
            "1GiB",
            "-o",
            dir.join("big").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("lend CPU to this pool"), "{err}");
    net.stop_all(std::time::Duration::from_secs(20)).unwrap();
}
