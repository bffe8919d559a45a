//! The chaos run of the test suite: seven daemons in namespaces, three minutes of puts, gets,
//! site versions and settings under every kind of fault the schedule of seed 1 draws (kills,
//! a writer killed mid-put, a restart from an old copy of a home, partitions, loss, a slow
//! link, delayed and reordered packets, a full disk, a skewed clock, a garbage-sending peer, a
//! member leaving for good while another joins), then the checks of `testnet chaos`: nothing
//! acknowledged lost, every node agreeing, nothing under-replicated, every site's latest version
//! served, every store sound.
//!
//! Runs the real `testnet` binary, which runs the `kith` binary built next to it.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn three_minutes_of_chaos_lose_nothing_and_every_node_agrees() {
    let testnet = env!("CARGO_BIN_EXE_testnet");
    let kith = Path::new(testnet).with_file_name("kith");
    assert!(
        kith.is_file(),
        "no kith at {}: cargo build -p kith (or test the workspace)",
        kith.display()
    );
    let out = Command::new(testnet)
        .args(["chaos", "--nodes", "7", "--minutes", "3", "--seed", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("no report ({e}): {stdout}\n{stderr}"));
    assert!(
        out.status.success() && report["violations"] == 0,
        "chaos found violations (replay: testnet chaos --nodes 7 --minutes 3 --seed 1 --keep):\n{report:#}\n{stderr}"
    );
    assert_eq!(report["bytes_lost"], 0, "{report:#}");
    // The run did what it says: work was acknowledged and every kind of fault happened.
    assert!(report["puts_acknowledged"].as_u64().unwrap() >= 10, "{report:#}");
    assert!(report["gets"].as_u64().unwrap() >= 5, "{report:#}");
    assert!(report["garbage_streams"].as_u64().unwrap() > 0, "{report:#}");
    let faults = report["faults"].as_object().unwrap();
    for kind in [
        "kill",
        "kill_mid_put",
        "restart_from_old_home",
        "partition",
        "loss",
        "slow_link",
        "disk_full",
        "leave_and_join",
        "clock_skew",
        "garbage_peer",
        "delay_and_reorder",
    ] {
        assert!(faults.get(kind).and_then(|n| n.as_u64()).unwrap_or(0) > 0, "{kind}: {report:#}");
    }
}
