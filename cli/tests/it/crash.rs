//! kill -9 in the middle of a put leaves the store consistent.

use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

#[test]
fn kill_9_during_put_leaves_earlier_objects_intact_and_no_half_object() {
    let k = Kith::new();
    let small = k.path("small");
    write(&small.join("a.txt"), &text_bytes(10_000, 1));
    let small_id = k.put(&small);
    let packs_before = k.packs().len();

    let big = k.path("big.bin");
    write(&big, &random_bytes(400 << 20, 31));
    let mut child = k
        .cmd()
        .args(["put", big.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Packs are renamed into place and indexed a batch at a time; once a pack of the second
    // batch is in place, the first batch is in the index.
    let batch = kith_node::store::INDEX_CHECKPOINT_PACKS;
    wait_for(Duration::from_secs(60), "the put to commit a batch of packs", || {
        k.packs().len() > packs_before + batch
    });
    assert!(child.try_wait().unwrap().is_none(), "the put finished before it could be killed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let ls: serde_json::Value = serde_json::from_str(&k.ok(&["ls", "--json"]).stdout).unwrap();
    let ids: Vec<&str> = ls.as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![small_id.as_str()], "no half object may be visible");
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["damaged_blobs"].as_array().unwrap().len(), 0);
    assert!(v["unreferenced_blobs"].as_u64().unwrap() > 0, "the committed packs stay for reuse");
    k.ok(&["get", &small_id, "-o", k.path("small-out").to_str().unwrap()]);
    assert_eq!(describe(&k.path("small-out")), describe(&small));

    // The next put reuses what the killed one committed.
    let again = k.put_json(&big);
    assert!(again["bytes_new"].as_u64().unwrap() < 400 << 20, "{again}");
    let piped = k.cmd().args(["get", again["id"].as_str().unwrap(), "-o", "-"]).output().unwrap();
    assert!(piped.stdout == std::fs::read(&big).unwrap(), "restored bytes differ");

    k.ok(&["gc"]);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["unreferenced_blobs"], 0);
    assert_eq!(v["unindexed_packs"].as_array().unwrap().len(), 0);
}
