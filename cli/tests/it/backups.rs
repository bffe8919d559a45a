//! Scheduled backups (`kith backup`): a folder stored into a pool on a schedule, unchanged
//! files skipped, the retention applied here and in the pool, a run missed while the machine
//! was off made at start, and a source that vanishes reported without losing what was kept.

use std::fs;
use std::time::Duration;

use kith_testnet::Testnet;
use serde_json::Value;

use crate::util::*;

const CONVERGE: Duration = Duration::from_secs(90);

fn job(net: &Testnet, name: &str) -> Value {
    let v = net.json(0, &["backup", "ls"]).unwrap();
    v.as_array().unwrap().iter().find(|j| j["name"] == name).cloned().unwrap_or(Value::Null)
}

fn pool_objects(net: &Testnet) -> usize {
    net.json(0, &["pool", "show", "street"]).unwrap()["objects"].as_array().unwrap().len()
}

#[test]
fn a_folder_is_backed_up_on_schedule_into_the_pool_and_the_retention_reclaims_old_versions() {
    let mut net = street_of_three(2);
    net.wait_for(CONVERGE, "ada to see both offers", |net| {
        Ok(net.json(0, &["pool", "show", "street"])?["capacity"]["offered"] == 2u64 << 30)
    })
    .unwrap();
    let docs = net.dir().join("docs");
    fs::create_dir_all(&docs).unwrap();
    write(&docs.join("a.txt"), &text_bytes(100 << 10, 1));
    write(&docs.join("b.bin"), &random_bytes(1 << 20, 2));
    let docs_s = docs.to_str().unwrap();

    // Bad jobs are refused clearly.
    for (args, why) in [
        (vec!["--to", "nowhere"], "nowhere"),
        (vec!["--to", "street", "--every", "10s"], "too often"),
        (vec!["--to", "street", "--keep", "fortnightly=2"], "unknown rule"),
    ] {
        let mut a = vec!["backup", "add", docs_s];
        a.extend(args);
        let out = net.kith(0, &a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{why}: {err}");
    }
    let missing = net.kith(0, &["backup", "add", "/no/such/folder", "--to", "home"]);
    assert!(!missing.status.success());

    // Added: the first run comes by itself (the job has never run).
    let added =
        net.json(0, &["backup", "add", docs_s, "--to", "street", "--keep", "last=2"]).unwrap();
    assert_eq!((added["name"].as_str(), added["keep"].as_str()), (Some("docs"), Some("last=2")));
    net.wait_for(CONVERGE, "the first run", |net| Ok(job(net, "docs")["runs"] == 1)).unwrap();
    assert_eq!(job(&net, "docs")["last_version"], 1, "{}", job(&net, "docs"));
    assert_eq!(pool_objects(&net), 1);

    // Run by hand: nothing changed, nothing read again; then a change.
    let runs = net.json(0, &["backup", "run", "docs"]).unwrap();
    assert_eq!(runs[0]["version"], 2, "{runs}");
    assert_eq!(runs[0]["files_unchanged"], 2, "{runs}");
    write(&docs.join("c.txt"), &text_bytes(50 << 10, 3));
    let runs = net.json(0, &["backup", "run", "docs"]).unwrap();
    assert_eq!(runs[0]["version"], 3, "{runs}");
    // last=2: version 1 is forgotten here and released from the pool.
    assert_eq!(runs[0]["forgotten"], serde_json::json!([1]), "{runs}");
    let log = net.json(0, &["log", docs_s]).unwrap();
    let versions: Vec<u64> =
        log.as_array().unwrap().iter().map(|o| o["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, vec![2, 3]);
    assert_eq!(pool_objects(&net), 2);
    net.wait_for(CONVERGE, "bob to see version 1 released", |net| {
        Ok(net.json(1, &["pool", "show", "street"])?["objects"].as_array().map(Vec::len) == Some(2))
    })
    .unwrap();
    // A version stored by hand is not the job's: its retention leaves it alone.
    net.kith_ok(0, &["put", docs_s]).unwrap();
    let runs = net.json(0, &["backup", "run", "docs"]).unwrap();
    assert_eq!(runs[0]["version"], 5, "{runs}");
    assert_eq!(runs[0]["forgotten"], serde_json::json!([2]), "{runs}");
    let log = net.json(0, &["log", docs_s]).unwrap();
    let versions: Vec<u64> =
        log.as_array().unwrap().iter().map(|o| o["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, vec![3, 4, 5]);

    // The machine was off past the next run: the run is made at start.
    net.stop(0).unwrap();
    let file = net.nodes[0].home.join("backups.json");
    let mut jobs: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    let ran = jobs[0]["last_run_ms"].as_i64().unwrap();
    jobs[0]["last_run_ms"] = (ran - 2 * 3_600_000).into();
    fs::write(&file, serde_json::to_vec(&jobs).unwrap()).unwrap();
    net.start(0).unwrap();
    net.wait_for(CONVERGE, "the missed run at start", |net| Ok(job(net, "docs")["runs"] == 5))
        .unwrap();
    assert_eq!(job(&net, "docs")["last_version"], 6);

    // The source vanishes (an unplugged disk): a clear error, and what was kept stays.
    fs::rename(&docs, net.dir().join("docs.away")).unwrap();
    let out = net.kith(0, &["backup", "run", "docs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is gone"), "{err}");
    assert!(job(&net, "docs")["last_error"].as_str().unwrap().contains("is gone"));
    assert_eq!(pool_objects(&net), 2);
    fs::rename(net.dir().join("docs.away"), &docs).unwrap();

    // Removed: the job goes, its versions stay, and each reads back.
    net.kith_ok(0, &["backup", "rm", "docs"]).unwrap();
    assert_eq!(net.json(0, &["backup", "ls"]).unwrap(), serde_json::json!([]));
    let back = net.dir().join("back");
    net.kith_ok(0, &["get", &format!("{docs_s}@6"), "-o", back.to_str().unwrap()]).unwrap();
    assert_eq!(describe(&back), describe(&docs));
}

#[test]
fn a_backup_to_a_folder_on_another_disk_is_a_home_of_its_own_that_reads_back() {
    let a = Kith::new();
    let src = a.path("letters");
    write(&src.join("one.txt"), b"first letter");
    let disk = tempfile::tempdir().unwrap();
    let place = disk.path().join("kith-backup");
    let src_s = src.to_str().unwrap();
    let added = json_of(&a.ok(&[
        "backup",
        "add",
        src_s,
        "--to",
        place.to_str().unwrap(),
        "--keep",
        "last=2",
        "--json",
    ]));
    assert_eq!(added["to"], place.to_str().unwrap());
    for (i, text) in ["second", "third"].iter().enumerate() {
        let runs = json_of(&a.ok(&["backup", "run", "--json"]));
        assert_eq!(runs[0]["version"], i as u64 + 1, "{runs}");
        write(&src.join("one.txt"), text.as_bytes());
    }
    let runs = json_of(&a.ok(&["backup", "run", "--json"]));
    assert_eq!(
        (runs[0]["version"].as_u64(), runs[0]["forgotten"].clone()),
        (Some(3), serde_json::json!([1]))
    );
    // The folder is a home of this identity: it lists and restores by itself.
    let there = |args: &[&str]| {
        let out = std::process::Command::new(kith_bin())
            .arg("--home")
            .arg(&place)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let log: Value = serde_json::from_str(&there(&["log", src_s, "--json"])).unwrap();
    let versions: Vec<u64> =
        log.as_array().unwrap().iter().map(|o| o["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, vec![2, 3]);
    let back = a.path("back");
    there(&["get", &format!("{src_s}@3"), "-o", back.to_str().unwrap()]);
    assert_eq!(fs::read(back.join("one.txt")).unwrap(), b"third");
    // Nothing of it went into the node's own store.
    let here = a.run(&["log", src_s]);
    assert!(here.code != Some(0) || here.stdout.trim().is_empty(), "{}", here.stdout);

    // The source emptied (its disk's folder with nothing in it): stored, nothing forgotten.
    let aside = a.path("aside");
    fs::rename(&src, &aside).unwrap();
    fs::create_dir(&src).unwrap();
    let runs = json_of(&a.ok(&["backup", "run", "--json"]));
    assert_eq!(runs[0]["forgotten"], serde_json::json!([]), "{runs}");
    assert!(runs[0]["warning"].as_str().unwrap().contains("empty"), "{runs}");
    fs::remove_dir(&src).unwrap();
    fs::rename(&aside, &src).unwrap();
    // The disk unplugged (its mount point left empty): no new home there, a clear error.
    let unplugged = a.path("unplugged");
    fs::rename(&place, &unplugged).unwrap();
    fs::create_dir(&place).unwrap();
    let out = a.fail(&["backup", "run", "letters"]);
    assert!(out.stderr.contains("is not there"), "{}", out.stderr);
    assert_eq!(fs::read_dir(&place).unwrap().count(), 0, "a home was made on the mount point");
    // Places that cannot be: a missing disk, another identity's home, inside the source.
    let out = a.fail(&["backup", "add", src_s, "--to", "/no/such/disk/kith", "--name", "gone"]);
    assert!(out.stderr.contains("cannot make a backup place"), "{}", out.stderr);
    let other = Kith::new();
    other.ok(&["init"]);
    let theirs = other.home.to_str().unwrap();
    let out = a.fail(&["backup", "add", src_s, "--to", theirs, "--name", "theirs"]);
    assert!(out.stderr.contains("another identity"), "{}", out.stderr);
    let inside = src.join("kith");
    let out = a.fail(&["backup", "add", src_s, "--to", inside.to_str().unwrap(), "--name", "in"]);
    assert!(out.stderr.contains("each run would store the backup"), "{}", out.stderr);
}

fn json_of(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}
