//! The usage ledger between real daemons: nodes record storage, transfer and audits into each
//! pool's ledger for the month, receivers sign receipts, the ledgers sync, `verify` finds every
//! row backed by evidence, costs split into statements that add up, and bad input is refused.

use std::time::Duration;

use kith_testnet::{Layout, Testnet};
use serde_json::Value;

use crate::util::*;

const CONVERGE: Duration = Duration::from_secs(90);

fn ledger(net: &Testnet, i: usize) -> Value {
    net.json(i, &["ledger", "--pool", "street"]).unwrap()["pools"][0].clone()
}

fn row<'a>(l: &'a Value, name: &str) -> &'a Value {
    l["members"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()
}

fn n(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or(0)
}

fn fails(net: &Testnet, i: usize, args: &[&str]) -> String {
    let out = net.kith(i, args);
    assert!(!out.status.success(), "kith {} should fail", args.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_is_recorded_with_evidence_synced_verified_and_settled() {
    // Nodes 0 to 2 are ada, bo and cy; node 3 is ada's new machine after node 0 is lost.
    let mut net = testnet(4, Layout::Loopback);
    let names = ["ada", "bo", "cy"];
    for i in 0..3 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    for (i, name) in names.iter().enumerate().skip(1) {
        let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
    }
    for i in 0..3 {
        let zone = format!("house-{i}");
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", &zone]).unwrap();
    }
    net.wait_for(CONVERGE, "ada's node to see the three offers", |net| {
        Ok(net.json(0, &["pool", "show", "street"])?["capacity"]["offered"] == 3u64 << 30)
    })
    .unwrap();
    for (k, v) in [("replicas", "2"), ("record_every", "5s"), ("audit_every", "5s")] {
        net.kith_ok(0, &["pool", "set", "street", k, v]).unwrap();
    }
    net.wait_for(CONVERGE, "every node to see the charter and three offers", |net| {
        Ok((0..3).all(|i| {
            let v = net.json(i, &["pool", "show", "street"]).unwrap_or_default();
            v["charter"]["record_every_ms"] == 5000 && v["capacity"]["offered"] == 3u64 << 30
        }))
    })
    .unwrap();

    // Ada stores 3 MiB in the pool. Holding it is storage: byte-hours held for her by bo and
    // cy, backed by the audits they pass.
    let src = net.dir().join("photos.bin");
    let data = random_bytes(3 << 20, 7);
    write(&src, &data);
    let put = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    assert_eq!(put["pool"]["complete"], true, "{put}");
    let object = put["id"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    net.wait_for(CONVERGE, "storage and audits recorded, synced and verified", |net| {
        let l = ledger(net, 1);
        let (ada, bo, cy) = (row(&l, "ada"), row(&l, "bo"), row(&l, "cy"));
        let verify = net.kith(1, &["ledger", "verify", "--pool", "street"]);
        last = l.clone();
        Ok(n(ada, "storage_used") > 0
            && n(bo, "storage_provided") > 0
            && n(cy, "storage_provided") > 0
            && n(bo, "audits_passed") > 0
            && n(cy, "audits_passed") > 0
            && verify.status.success())
    })
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    // Placing replicas is not egress: nobody was charged for moving ada's copies.
    let l = ledger(&net, 2);
    for name in names {
        assert_eq!(n(row(&l, name), "egress_served"), 0, "{l}");
    }

    // Ada's machine is lost; her new one restores the object from bo's and cy's nodes. Those
    // bytes are egress: served by them, received by her, each serving node receipted.
    net.kill(0).unwrap();
    net.share_identity(3, 0).unwrap();
    net.start(3).unwrap();
    net.wait_for(CONVERGE, "the restored identity to find its pool", |net| {
        Ok(net.json(3, &["pool", "ls"])?.as_array().is_some_and(|a| a.len() == 1))
    })
    .unwrap();
    let back = net.dir().join("restored.bin");
    net.kith_ok(3, &["get", &object[..12], "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == data, "restored bytes differ");
    net.wait_for(CONVERGE, "the restore's transfer recorded with receipts and verified", |net| {
        let l = ledger(net, 1);
        let (ada, bo, cy) = (row(&l, "ada"), row(&l, "bo"), row(&l, "cy"));
        let served = n(bo, "egress_served") + n(cy, "egress_served");
        let verify = net.kith(1, &["ledger", "verify", "--pool", "street"]);
        last = l.clone();
        Ok(n(ada, "egress_received") >= data.len() as i64
            && served == n(ada, "egress_received")
            && n(ada, "receipts") >= 1
            && verify.status.success())
    })
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    let verify = net.json(2, &["ledger", "verify", "--pool", "street"]).unwrap();
    assert!(verify["pools"][0]["receipts"].as_u64().unwrap() >= 1, "{verify}");
    assert_eq!(verify["pools"][0]["flags"], Value::Array(vec![]), "{verify}");

    // Costs: admins only, well-formed amounts only.
    let err = fails(&net, 1, &["ledger", "cost", "street", "5", "snacks"]);
    assert!(err.contains("only an admin enters costs"), "{err}");
    for bad in ["abc", "-5", "1.234", "0"] {
        let err = fails(&net, 3, &["ledger", "cost", "street", bad, "power"]);
        assert!(err.contains("amount") || err.contains("more than 0"), "{bad}: {err}");
    }
    let err = fails(&net, 3, &["ledger", "cost", "street", "5", "   "]);
    assert!(err.contains("say what the cost paid for"), "{err}");
    net.kith_ok(3, &["ledger", "cost", "street", "30.01", "electricity, November"]).unwrap();
    net.wait_for(CONVERGE, "the cost to reach cy's node", |net| {
        Ok(n(&ledger(net, 2), "costs_cents") == 3001)
    })
    .unwrap();

    // Statements a treasurer can pay: the shares add up to the costs exactly.
    let st = net.json(2, &["ledger", "statement", "--pool", "street", "--format", "json"]).unwrap();
    let members = st["statements"][0]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{st}");
    assert_eq!(members.iter().map(|m| n(m, "owes_cents")).sum::<i64>(), 3001, "{st}");
    let csv_path = net.dir().join("november.csv");
    net.kith_ok(
        2,
        &[
            "ledger",
            "statement",
            "--pool",
            "street",
            "--format",
            "csv",
            "-o",
            csv_path.to_str().unwrap(),
        ],
    )
    .unwrap();
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("pool,period,member,name,"), "{csv}");
    let col = |name: &str| lines[0].split(',').position(|c| c == name).expect(name);
    let cell = |l: &str, name: &str| l.split(',').nth(col(name)).unwrap().to_string();
    let owed: f64 = lines[1..].iter().map(|l| cell(l, "owes").parse::<f64>().unwrap()).sum();
    assert!((owed - 30.01).abs() < 0.001, "{csv}");
    // Serving is credited by receipts; with no transfer cut, they cover what was served.
    for l in &lines[1..] {
        assert_eq!(cell(l, "served_bytes"), cell(l, "served_receipted_bytes"), "{csv}");
    }
    // The file is not overwritten.
    let err = fails(
        &net,
        2,
        &["ledger", "statement", "--pool", "street", "-o", csv_path.to_str().unwrap()],
    );
    assert!(err.contains("must not exist"), "{err}");

    // Periods: malformed, not begun, or with nothing recorded.
    let err = fails(&net, 1, &["ledger", "--period", "2026-13"]);
    assert!(err.contains("is not a period"), "{err}");
    let err = fails(&net, 1, &["ledger", "--period", "2999-01"]);
    assert!(err.contains("has not begun"), "{err}");
    let err = fails(&net, 1, &["ledger", "statement", "--pool", "street", "--period", "2020-01"]);
    assert!(err.contains("no ledger data"), "{err}");
    let err = fails(&net, 1, &["ledger", "statement", "--format", "xml"]);
    assert!(err.contains("unknown format"), "{err}");

    // Sealing: only a month that has ended, only by an admin, only once.
    let this = l["period"].as_str().unwrap().to_string();
    let err = fails(&net, 3, &["ledger", "seal", "street", &this]);
    assert!(err.contains("not over yet"), "{err}");
    let prev = {
        let (y, m) = this.split_once('-').unwrap();
        let (y, m): (i32, u32) = (y.parse().unwrap(), m.parse().unwrap());
        if m == 1 { format!("{}-12", y - 1) } else { format!("{y}-{:02}", m - 1) }
    };
    let err = fails(&net, 1, &["ledger", "seal", "street", &prev]);
    assert!(err.contains("only an admin"), "{err}");
    net.kith_ok(3, &["ledger", "seal", "street", &prev]).unwrap();
    let err = fails(&net, 3, &["ledger", "seal", "street", &prev]);
    assert!(err.contains("already sealed"), "{err}");
    net.wait_for(CONVERGE, "bo's node to see the seal", |net| {
        let v = net.json(1, &["ledger", "--pool", "street", "--period", &prev])?;
        Ok(v["pools"][0]["sealed_by"].is_string())
    })
    .unwrap();
}

#[test]
fn a_node_that_stops_records_what_it_accrued_first() {
    // The hourly record is not due; stopping the node records anyway.
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
    net.kith_ok(1, &["pool", "join", ticket.trim(), "--as", "bo"]).unwrap();
    net.kith_ok(1, &["offer", "street", "--storage", "1GiB"]).unwrap();
    let src = net.dir().join("a.bin");
    write(&src, &random_bytes(3 << 20, 3));
    net.wait_for(CONVERGE, "ada's node to see bo's offer", |net| {
        Ok(net.json(0, &["pool", "show", "street"])?["capacity"]["offered"] == 1u64 << 30)
    })
    .unwrap();
    net.kith_ok(0, &["pool", "set", "street", "replicas", "1"]).unwrap();
    let put = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    assert_eq!(put["pool"]["complete"], true, "{put}");
    // Bo's node holds the copy through two repair passes (storage accrues between passes),
    // then stops.
    let mut first = 0;
    net.wait_for(CONVERGE, "bo's node to hold the copy in a repair pass", |net| {
        let v = net.json(1, &["pool", "show", "street"])?;
        first = v["repair"]["at_ms"].as_u64().unwrap_or(0);
        Ok(v["repair"]["responsible_blobs"] != 0 && v["repair"]["lacking_blobs"] == 0)
    })
    .unwrap();
    net.wait_for(CONVERGE, "the next repair pass", |net| {
        let v = net.json(1, &["pool", "show", "street"])?;
        Ok(v["repair"]["at_ms"].as_u64().unwrap_or(0) > first)
    })
    .unwrap();
    assert_eq!(n(row(&ledger(&net, 1), "bo"), "storage_provided"), 0, "recorded before it was due");
    net.stop(1).unwrap();
    net.start(1).unwrap();
    let l = ledger(&net, 1);
    assert!(n(row(&l, "bo"), "storage_provided") > 0, "{l}");
}
