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
    // The input may be an object of ada's store, by its id: the same job, the same result.
    let stored = net.json(0, &["put", input.to_str().unwrap()]).unwrap();
    let oid = stored["id"].as_str().unwrap()[..12].to_string();
    let from_object = net
        .json(
            0,
            &[
                "job",
                "run",
                job.to_str().unwrap(),
                "--input",
                &oid,
                "-o",
                dir.join("obj").to_str().unwrap(),
            ],
        )
        .unwrap();
    assert_eq!(from_object["hash"], here_hash, "{from_object}");
    let out = net.kith(
        0,
        &[
            "job",
            "run",
            job.to_str().unwrap(),
            "--input",
            "nothing-here",
            "-o",
            dir.join("x").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("neither a file or folder nor an object"),
        "{err}"
    );
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

    // Ada's jobs are listed, newest first, with how each ended.
    let ls = net.json(0, &["job", "ls"]).unwrap();
    let jobs = ls["jobs"].as_array().unwrap();
    let states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    let expect = ["failed", "failed", "failed", "failed", "done", "done", "done", "failed", "done"];
    assert_eq!(states, expect, "{ls}");
    assert!(jobs[3]["error"].as_str().unwrap().contains("ran out of fuel"), "{ls}");
    let pooled_id = jobs[6]["id"].as_str().unwrap();
    assert_eq!(jobs[6]["hash"], v["hash"], "{ls}");
    assert_eq!(jobs[6]["pool"], "street", "{ls}");
    let shown = net.kith_ok(0, &["job", "show", &pooled_id[..8]]).unwrap();
    assert!(
        shown.contains("pool street (2 runner(s) must agree)") && shown.contains("agreed"),
        "{shown}"
    );

    // A long job on the pool, cancelled by ada: its runners stop too.
    let long = |net: &kith_testnet::Testnet, name: &str| {
        net.cmd(0)
            .args(["job", "run", spin.to_str().unwrap(), "--pool", "street", "--memory", "32MiB"])
            .args(["--fuel", "2000000000000", "-o", dir.join(name).to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let running = |net: &kith_testnet::Testnet, i: usize| -> Vec<serde_json::Value> {
        let v = net.json(i, &["job", "ls"]).unwrap();
        v["jobs"].as_array().unwrap().iter().filter(|j| j["state"] == "running").cloned().collect()
    };
    let child = long(&net, "long");
    net.wait_for(std::time::Duration::from_secs(30), "the long job on both runners", |net| {
        Ok(running(net, 0).len() == 1 && running(net, 1).len() == 1 && running(net, 2).len() == 1)
    })
    .unwrap();
    let id = running(&net, 0)[0]["id"].as_str().unwrap().to_string();
    assert_eq!(running(&net, 1)[0]["side"], "runner");
    assert_eq!(running(&net, 1)[0]["what"], "ada");
    net.kith_ok(0, &["job", "cancel", &id[..8]]).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("was cancelled"), "{err}");
    net.wait_for(std::time::Duration::from_secs(10), "the runners to stop it", |net| {
        Ok(running(net, 1).is_empty() && running(net, 2).is_empty())
    })
    .unwrap();
    let shown = net.json(0, &["job", "show", &id[..8]]).unwrap();
    assert_eq!(shown["state"], "cancelled", "{shown}");
    // One cancelled by a runner's owner: that runner refuses it, and with nobody else to run
    // it, ada's job fails saying so.
    let child = long(&net, "long2");
    net.wait_for(std::time::Duration::from_secs(30), "the second long job on bob's node", |net| {
        Ok(running(net, 1).len() == 1)
    })
    .unwrap();
    let id = running(&net, 1)[0]["id"].as_str().unwrap().to_string();
    let v = net.json(1, &["job", "cancel", &id[..8]]).unwrap();
    assert_eq!((v["submitted"].as_u64(), v["running_for_others"].as_u64()), (Some(0), Some(1)));
    net.kith_ok(2, &["job", "cancel", &id[..8]]).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("the job was cancelled"), "{err}");
    let out = net.kith(0, &["job", "cancel", "abcdef12"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running job abcdef12"));
    net.stop_all(std::time::Duration::from_secs(20)).unwrap();
}

/// A member's node that lies: it speaks `kith/job/1` with its own node key, runs each job in a
/// real sandbox, and adds a line to the job's standard output before hashing and signing the
/// result, so its answer passes every check but the comparison with other runners.
#[derive(Clone)]
struct Liar {
    key: iroh::SecretKey,
    sandbox: kith_compute::Sandbox,
    tmp: std::path::PathBuf,
    /// Instead of lying, read the job and go away without a word (a runner that dies).
    vanish: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Liar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Liar")
    }
}

impl iroh::protocol::ProtocolHandler for Liar {
    async fn accept(
        &self,
        conn: iroh::endpoint::Connection,
    ) -> Result<(), iroh::protocol::AcceptError> {
        use kith_compute::jobs::{self, JobReply, JobRequest};
        use kith_node::net::frame;
        let Ok((mut send, mut recv)) = conn.accept_bi().await else { return Ok(()) };
        let Ok(Some(req)) = frame::read_max::<JobRequest>(&mut recv, jobs::MAX_REQUEST).await
        else {
            return Ok(());
        };
        if self.vanish.load(std::sync::atomic::Ordering::Relaxed) {
            conn.close(0u32.into(), b"");
            return Ok(());
        }
        let (sandbox, dir) = (self.sandbox.clone(), tempfile::tempdir_in(&self.tmp).unwrap());
        let r = req.clone();
        let (ran, mut files) = tokio::task::spawn_blocking(move || {
            jobs::run_materialised(&sandbox, &r, dir.path(), None).expect("the liar runs the job")
        })
        .await
        .unwrap();
        let stdout = files.iter_mut().find(|(p, _)| p == "stdout").unwrap();
        let mut lied = stdout.1.to_vec();
        lied.extend_from_slice(b"and a lie\n");
        stdout.1 = lied.into();
        let hash = jobs::files_hash(&files);
        let sig = self.key.sign(&jobs::receipt(&req.pool, &req.id(), &hash, ran.exit, ran.fuel));
        let reply = JobReply::Ran {
            exit: ran.exit,
            fuel: ran.fuel,
            hash,
            files,
            wall_ms: 1,
            sig: sig.to_bytes().to_vec().into(),
        };
        let _ = frame::write_max(&mut send, &reply, jobs::MAX_REPLY).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
        Ok(())
    }
}

#[test]
fn a_runner_that_lies_is_outvoted_recorded_asked_last_and_never_paid() {
    let mut net = street_of_three(2);
    let dir = net.dir().to_path_buf();
    let job = dir.join("copy.wat");
    write(&job, copy_job().as_bytes());
    let input = dir.join("in");
    write(&input.join("a.txt"), b"bread and butter");
    // Usage (CPU included) goes into the ledger every 5 s rather than every hour.
    net.kith_ok(0, &["pool", "set", "street", "record_every", "5s"]).unwrap();
    // Ada, bob and cy each lend a core.
    for i in 0..3 {
        net.kith_ok(i, &["offer", "--cpu", "1", "--memory", "64MiB"]).unwrap();
    }
    net.wait_for(std::time::Duration::from_secs(30), "ada to see three offers", |net| {
        let v = net.json(0, &["pool", "show"])?;
        let lending = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["nodes"].as_array().unwrap().clone())
            .filter(|n| n["cpu"] == 1)
            .count();
        Ok(lending == 3)
    })
    .unwrap();
    let run = |net: &kith_testnet::Testnet, k: usize| {
        let out = dir.join(format!("out-{k}"));
        let k = k.to_string();
        net.json(
            0,
            &[
                "job",
                "run",
                job.to_str().unwrap(),
                "--pool",
                "street",
                "--redundancy",
                "2",
                "--memory",
                "32MiB",
                "--arg",
                &k,
                "--input",
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
        )
        .unwrap()
    };
    let truth = run(&net, 0);
    assert!(truth["runners"].as_array().unwrap().iter().all(|r| r["answer"] == "agreed"));

    // Cy's node is replaced by one that lies, with cy's key at cy's address.
    let (bob, cy) = (net.id(1).unwrap(), net.id(2).unwrap());
    let addr: std::net::SocketAddr =
        net.json(2, &["status"]).unwrap()["addrs"][0].as_str().unwrap().parse().unwrap();
    net.stop(2).unwrap();
    let home = kith_node::Home::open(&dir.join("node2")).unwrap();
    let liar = Liar {
        key: home.node_key().unwrap().secret().clone(),
        sandbox: kith_compute::Sandbox::new().unwrap(),
        tmp: dir.clone(),
        vanish: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let vanish = liar.vanish.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let router = rt.block_on(async {
        let ep = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
            .secret_key(liar.key.clone())
            .relay_mode(iroh::RelayMode::Disabled)
            .clear_address_lookup()
            .clear_ip_transports()
            .bind_addr(addr)
            .unwrap()
            .bind()
            .await
            .unwrap();
        iroh::protocol::Router::builder(ep).accept(kith_compute::jobs::JOB_ALPN, liar).spawn()
    });

    // First it dies with each job it is given: the job is run on bob instead, and its death
    // says nothing of its honesty.
    let mut died = false;
    let mut after_truth = 0;
    for k in 101..=103 {
        let v = run(&net, k);
        after_truth += 1;
        assert_eq!(v["hash"], truth["hash"], "{v}");
        if let Some(r) = v["runners"].as_array().unwrap().iter().find(|r| r["node"] == cy.as_str())
        {
            assert!(r["answer"].as_str().unwrap().starts_with("unreachable"), "{v}");
            died = true;
            break;
        }
    }
    assert!(died, "the dying runner was never given a job");
    vanish.store(false, std::sync::atomic::Ordering::Relaxed);
    // Jobs go to the runner given fewest jobs: the liar is asked at least every other job,
    // outvoted by ada's and bob's answers each time, and every accepted result is the true
    // one; once most of its checked answers disagreed (at least 3 checked), it is doubtful.
    let standing = |net: &kith_testnet::Testnet, i: usize| {
        let v = net.json(i, &["pool", "show"]).unwrap();
        v["runners"].as_array().unwrap().iter().find(|r| r["node"] == cy.as_str()).cloned()
    };
    let mut liar_asked = 0;
    for k in 1..=8 {
        let v = run(&net, k);
        after_truth += 1;
        assert_eq!(v["hash"], truth["hash"], "{v}");
        let runners = v["runners"].as_array().unwrap();
        for r in runners {
            let expect = if r["node"] == cy.as_str() { "disagreed" } else { "agreed" };
            assert_eq!(r["answer"], expect, "{v}");
        }
        if runners.iter().any(|r| r["node"] == cy.as_str()) {
            liar_asked += 1;
            assert!(runners.iter().any(|r| r["node"] == bob.as_str()), "re-run on bob: {v}");
        }
        if standing(&net, 0).is_some_and(|s| s["doubtful"] == true) {
            break;
        }
    }
    assert!(liar_asked >= 2, "the liar was asked {liar_asked} times");
    // (Records are written together shortly after the answers: the last lands a moment later.)
    net.wait_for(std::time::Duration::from_secs(10), "ada's records of the liar", |net| {
        Ok(standing(net, 0).is_some_and(|s| s["disagreed"].as_u64() == Some(liar_asked)))
    })
    .unwrap();
    assert_eq!(std::fs::read(dir.join("out-1/stdout")).unwrap(), b"done\n");
    // Ada's records of it are in the pool document: its reputation, shown to everyone.
    let s = standing(&net, 0).expect("cy's node has a standing");
    assert_eq!(s["doubtful"], true, "{s}");
    assert_eq!(s["disagreed"].as_u64(), Some(liar_asked), "{s}");
    assert!(s["agreed"].as_u64().unwrap() < liar_asked, "{s}");
    assert!(s["reason"].as_str().unwrap().contains("where the others agreed"), "{s}");
    net.wait_for(std::time::Duration::from_secs(30), "bob to see cy's standing", |net| {
        Ok(standing(net, 1).is_some_and(|s| s["disagreed"].as_u64() == Some(liar_asked)))
    })
    .unwrap();
    let shown = net.kith_ok(0, &["pool", "show"]).unwrap();
    assert!(shown.contains("asked last"), "{shown}");
    // Now it is asked last: ada and bob agree without it.
    let v = run(&net, 70);
    after_truth += 1;
    let runners: Vec<&str> =
        v["runners"].as_array().unwrap().iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert!(!runners.contains(&cy.as_str()) && runners.contains(&bob.as_str()), "{v}");
    // The ledger: ada took bob's CPU and signed for it; the liar earned nothing for its lies
    // (at most the one job it may have run honestly before).
    let one_job_h = truth["cpu_seconds"].as_f64().unwrap() / 3600.0;
    // (An error until the first record: "no ledger data".)
    let statement = |net: &kith_testnet::Testnet| {
        let st = net.json(0, &["ledger", "statement", "--format", "json"])?;
        let members = st["statements"][0]["members"].as_array().cloned().unwrap_or_default();
        let of = |name: &str, what: &str| {
            members.iter().find(|m| m["name"] == name).and_then(|m| m[what].as_f64()).unwrap_or(0.0)
        };
        anyhow::Ok((
            of("bob", "cpu_given_h"),
            of("cy", "cpu_given_h"),
            of("ada", "cpu_taken_h"),
            st,
        ))
    };
    // Every job after the first ran on bob (the first on bob or on cy, then honest), once the
    // last record landed.
    net.wait_for(std::time::Duration::from_secs(30), "the ledger's CPU figures", |net| {
        Ok(statement(net)
            .is_ok_and(|(bob, cy, _, _)| bob + cy >= (after_truth + 1) as f64 * one_job_h * 0.999))
    })
    .unwrap();
    let (bob, cy, taken, st) = statement(&net).unwrap();
    assert!(bob >= after_truth as f64 * one_job_h * 0.999, "{st}");
    assert!(cy <= one_job_h * 1.001, "{st}");
    assert!((taken - bob - cy).abs() < one_job_h * 1e-3, "{st}");
    let verified = net.kith(0, &["ledger", "verify"]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    rt.block_on(router.shutdown()).unwrap();
    net.stop_all(std::time::Duration::from_secs(20)).unwrap();
}

#[test]
fn runners_on_this_lan_are_asked_before_those_reached_otherwise() {
    // Three nodes in network namespaces on one bridge; cy's node does not announce itself by
    // mDNS (as a node on another segment, reached by its ticket, would not).
    let mut net = testnet(3, kith_testnet::Layout::Namespaces);
    net.nodes[2].up_args = vec!["--no-mdns".into()];
    for i in 0..3 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    net.start_all().unwrap();
    for (i, j) in [(0, 2), (2, 0), (1, 2), (2, 1)] {
        net.connect(i, j).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    for (i, name) in [(1, "bob"), (2, "cy")] {
        let ticket = net.kith_ok(0, &["pool", "invite"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
        net.kith_ok(i, &["offer", "--cpu", "1", "--memory", "64MiB"]).unwrap();
    }
    let (bob, cy) = (net.id(1).unwrap(), net.id(2).unwrap());
    net.wait_for(
        std::time::Duration::from_secs(30),
        "ada to see both offers, bob on the LAN",
        |net| {
            let v = net.json(0, &["pool", "show"])?;
            let lending = v["members"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["nodes"].as_array().unwrap().clone())
                .filter(|n| n["cpu"] == 1)
                .count();
            let peers = net.peers(0)?;
            let on_lan = |id: &str| peers.iter().any(|p| p["id"] == id && p["mdns"] == true);
            Ok(lending == 2 && on_lan(&bob) && !on_lan(&cy))
        },
    )
    .unwrap();
    let dir = net.dir().to_path_buf();
    let job = dir.join("copy.wat");
    write(&job, copy_job().as_bytes());
    write(&dir.join("in/a.txt"), b"rye");
    let run = |net: &kith_testnet::Testnet, k: usize| {
        let out = dir.join(format!("out-{k}"));
        let (inp, out) = (dir.join("in"), out.to_str().unwrap().to_string());
        let v = net
            .json(
                0,
                &[
                    "job",
                    "run",
                    job.to_str().unwrap(),
                    "--pool",
                    "street",
                    "--redundancy",
                    "1",
                    "--memory",
                    "32MiB",
                    "--arg",
                    &k.to_string(),
                    "--input",
                    inp.to_str().unwrap(),
                    "-o",
                    &out,
                ],
            )
            .unwrap();
        let runners: Vec<(String, String)> = v["runners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (r["node"].as_str().unwrap().to_string(), r["answer"].as_str().unwrap().to_string())
            })
            .collect();
        runners
    };
    // Bob, on this LAN, takes every job while he can, however many he was given.
    for k in 0..3 {
        assert_eq!(run(&net, k), [(bob.clone(), "agreed".to_string())], "job {k}");
    }
    // Gone, and known to be gone (he missed a ping): jobs go to cy at once.
    net.stop(1).unwrap();
    net.wait_for(std::time::Duration::from_secs(30), "ada to find bob unreachable", |net| {
        Ok(net.peers(0)?.iter().any(|p| p["id"] == bob.as_str() && p["state"] == "unreachable"))
    })
    .unwrap();
    assert_eq!(run(&net, 3), [(cy.clone(), "agreed".to_string())]);
    net.stop_all(std::time::Duration::from_secs(20)).unwrap();
}
