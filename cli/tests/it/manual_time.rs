//! Pools on manual time: daemons in this process (through the library's typed API) share one
//! clock that moves only when the test says, so an hour's invite, a ten-minute repair delay, an
//! hourly usage record and the end of a month are each a step, not a wait.

use std::time::Duration;

use kith::api::node::{Status, Worker};
use kith::api::pools::{PoolDetail, PoolRef, Ticket};
use kith::api::store::Put;
use kith::{LedgerReq, PoolReq, Request};
use kith_testnet::inproc::Daemons;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const MINUTE: Duration = Duration::from_secs(60);

fn pool(req: PoolReq) -> Request {
    Request::Pool(req)
}

fn show(d: &Daemons, i: usize) -> anyhow::Result<PoolDetail> {
    d.call(i, pool(PoolReq::Show { pool: "street".into() }))
}

/// Node 0 founds `street` (as ada) and every other node joins (bo, cy, ...); every node offers
/// 1 GiB in a zone of its own, and each has seen every offer.
fn street(d: &mut Daemons, replicas: u64) -> Vec<String> {
    let names: Vec<String> =
        ["ada", "bo", "cy", "di"].iter().take(d.len()).map(|s| s.to_string()).collect();
    d.start_all().unwrap();
    let create = PoolReq::Create {
        name: "street".into(),
        replicas: Some(replicas),
        quota: None,
        display: Some(names[0].clone()),
    };
    let _: PoolRef = d.call(0, pool(create)).unwrap();
    for (i, name) in names.iter().enumerate().skip(1) {
        let t: Ticket = d
            .call(0, pool(PoolReq::Invite { pool: "street".into(), expires: "1h".into(), uses: 1 }))
            .unwrap();
        let join = PoolReq::Join { ticket: t.ticket, display: Some(name.clone()) };
        let _: PoolRef = d.call(i, pool(join)).unwrap();
    }
    for i in 0..d.len() {
        let offer = PoolReq::Offer {
            pool: "street".into(),
            storage: "1GiB".into(),
            egress: None,
            zone: Some(format!("house-{i}")),
        };
        let _: Value = d.call(i, pool(offer)).unwrap();
    }
    let n = d.len() as u64;
    d.wait_for(LIMIT, "every node to see every offer", |d| {
        Ok((0..d.len()).all(|i| show(d, i).is_ok_and(|v| v.capacity.offered == n << 30)))
    })
    .unwrap();
    names
}

/// Waits until node `i` has run a repair pass of `street` at the clock's current time.
fn repair_pass_now(d: &Daemons, i: usize) -> PoolDetail {
    let now = d.clock.now_ms();
    let mut found = None;
    d.wait_for(LIMIT, &format!("node {i} to repair at the new time"), |d| {
        let v = show(d, i)?;
        let done = v.repair.as_ref().is_some_and(|r| r.at_ms >= now);
        found = Some(v);
        Ok(done)
    })
    .unwrap();
    found.unwrap()
}

/// Waits until node `i`'s usage worker has run a pass more than `before`.
fn usage_pass_after(d: &Daemons, i: usize, before: u64) {
    d.wait_for(LIMIT, &format!("node {i}'s usage worker to run"), |d| {
        Ok(usage_passes(d, i)? > before)
    })
    .unwrap();
}

fn usage_passes(d: &Daemons, i: usize) -> anyhow::Result<u64> {
    Ok(worker(d, i, "usage street")?.map_or(0, |w| w.passes))
}

fn worker(d: &Daemons, i: usize, name: &str) -> anyhow::Result<Option<Worker>> {
    let s: Status = d.call(i, Request::Status)?;
    Ok(s.workers.into_iter().find(|w| w.name == name))
}

/// Moves the clock by `by` and returns, per node of `nodes`, the blobs its next repair pass
/// found it should hold (from the repair worker's progress, without asking other nodes).
fn shares_after(d: &Daemons, by: Duration, nodes: &[usize]) -> Vec<u64> {
    let passes = |d: &Daemons, i| worker(d, i, "repair street").unwrap().map_or(0, |w| w.passes);
    let before: Vec<u64> = nodes.iter().map(|&i| passes(d, i)).collect();
    d.clock.advance(by);
    nodes
        .iter()
        .zip(before)
        .map(|(&i, b)| {
            let mut w = None;
            d.wait_for(LIMIT, &format!("node {i} to repair"), |d| {
                w = worker(d, i, "repair street")?;
                Ok(w.as_ref().is_some_and(|w| w.passes > b))
            })
            .unwrap();
            w.and_then(|w| w.progress).map_or(0, |(_, total)| total)
        })
        .collect()
}

fn put_file(d: &Daemons, i: usize, name: &str, bytes: usize) -> Put {
    let path = d.dir().join(name);
    let data: Vec<u8> = (0..bytes).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, data).unwrap();
    d.call(i, Request::Put { path, pool: Some("street".into()) }).unwrap()
}

#[test]
fn an_invite_expires_by_the_inviting_nodes_clock() {
    let mut d = Daemons::new(2).unwrap();
    d.start_all().unwrap();
    let create =
        PoolReq::Create { name: "street".into(), replicas: None, quota: None, display: None };
    let _: PoolRef = d.call(0, pool(create)).unwrap();
    let invite = |d: &Daemons| -> Ticket {
        d.call(0, pool(PoolReq::Invite { pool: "street".into(), expires: "1h".into(), uses: 1 }))
            .unwrap()
    };
    let t = invite(&d);
    assert_eq!(t.expires_ms, d.clock.now_ms() as u64 + 3_600_000, "an hour from the pool's now");
    // 59 minutes later it still admits; an hour and a minute later it does not.
    d.clock.advance(59 * MINUTE);
    let late = invite(&d);
    d.clock.advance(2 * MINUTE);
    let err = d
        .call::<PoolRef>(1, pool(PoolReq::Join { ticket: t.ticket, display: None }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expired"), "{err}");
    let joined: PoolRef =
        d.call(1, pool(PoolReq::Join { ticket: late.ticket, display: Some("bo".into()) })).unwrap();
    assert_eq!(joined.name, "street");
}

#[test]
fn a_silent_holder_is_replaced_after_repair_after_and_not_before() {
    let mut d = Daemons::new(3).unwrap();
    street(&mut d, 2);
    let put = put_file(&d, 0, "photos.bin", 2 << 20);
    assert!(put.pool.as_ref().is_some_and(|p| p.complete), "{put:?}");
    // Two copies over three nodes: each blob has two holders, so the three shares add up to
    // two copies of everything.
    let share = |d: &Daemons, i: usize| repair_pass_now(d, i).repair.unwrap().responsible_blobs;
    // Once every node knows the object, their shares add up to two copies of every blob (a
    // node that holds none of it may hear of it a sync round after the put returned).
    let blobs = put.pool.as_ref().map_or(0, |p| p.blobs);
    let mut held: Vec<u64> = Vec::new();
    d.wait_for(LIMIT, "every node to know the object", |d| {
        held = (0..3).map(|i| share(d, i)).collect();
        Ok(held.iter().sum::<u64>() == 2 * blobs)
    })
    .unwrap_or_else(|e| panic!("{e}: {held:?}, {blobs} blobs"));
    // Placement goes by blob id (random: blobs are encrypted under this run's identity), so
    // any one node may hold nothing; the victim is the node other than the writer with the
    // larger share (two copies over three nodes leave at most one node without a share).
    let victim = if held[1] >= held[2] { 1 } else { 2 };
    assert!(held[victim] > 0, "{held:?}");
    let survivors = [0, 3 - victim];
    let before: u64 = survivors.iter().map(|&i| held[i]).sum();
    d.stop(victim).unwrap();

    // The default repair_after is ten minutes: for six, nobody takes the silent share over.
    for _ in 0..3 {
        let now: u64 = shares_after(&d, 2 * MINUTE, &survivors).iter().sum();
        assert_eq!(now, before, "a share moved after only a few minutes");
    }
    // Past ten minutes the victim is out: the two survivors hold every blob, twice.
    for _ in 0..3 {
        shares_after(&d, 2 * MINUTE, &survivors);
    }
    let all: u64 = held.iter().sum();
    let mut last = Vec::new();
    d.wait_for(LIMIT, "the survivors to hold the silent holder's share", |d| {
        last = survivors.iter().map(|&i| show(d, i).map(|v| v.repair)).collect::<Result<_, _>>()?;
        let taken: u64 = last.iter().flatten().map(|r| r.responsible_blobs).sum();
        let lacking: u64 = last.iter().flatten().map(|r| r.lacking_blobs).sum();
        Ok(taken == all && lacking == 0)
    })
    .unwrap_or_else(|e| panic!("{e}: {last:?}"));
}

#[test]
fn usage_is_recorded_every_hour_of_pool_time_and_a_month_seals_when_it_ends() {
    // 2027-01-31 22:30 UTC: the month ends ninety minutes in.
    let mut d = Daemons::new_at(2, 1_801_434_600_000).unwrap();
    street(&mut d, 2);
    let put = put_file(&d, 0, "photos.bin", 1 << 20);
    assert!(put.pool.as_ref().is_some_and(|p| p.complete), "{put:?}");
    // Bo holds ada's copy from the start: byte-hours accrue from here.
    let mut held = 0;
    d.wait_for(LIMIT, "bo's node to hold its share", |d| {
        let r = repair_pass_now(d, 1).repair.unwrap();
        held = r.responsible_bytes;
        Ok(r.responsible_blobs > 0 && r.lacking_blobs == 0)
    })
    .unwrap();
    let table = |d: &Daemons, period: &str| -> Value {
        let req = LedgerReq::Show { pool: Some("street".into()), period: Some(period.into()) };
        let t: Value = d.call(1, Request::Ledger(req)).unwrap();
        t["pools"][0].clone()
    };
    let provided = |t: &Value| -> i64 {
        let rows = t["members"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .find(|r| r["name"] == "bo")
            .map_or(0, |r| r["storage_provided"].as_i64().unwrap())
    };

    // Ten minutes at a time (a longer gap between two repair passes would count as a node
    // that was suspended, and accrue only ten minutes): for fifty minutes the usage worker
    // runs, but record_every (an hour) has not passed.
    let step = |d: &Daemons| {
        let before = usage_passes(d, 1).unwrap();
        d.clock.advance(10 * MINUTE);
        repair_pass_now(d, 1);
        usage_pass_after(d, 1, before);
    };
    for _ in 0..5 {
        step(&d);
        assert_eq!(provided(&table(&d, "2027-01")), 0, "recorded before an hour had passed");
    }
    // An hour: bo's row holds the byte-hours of the hour (or of the fifty minutes accrued
    // before the last repair pass, if the record came first).
    d.clock.advance(10 * MINUTE);
    d.wait_for(LIMIT, "bo's usage recorded in January", |d| Ok(provided(&table(d, "2027-01")) > 0))
        .unwrap();
    let jan = provided(&table(&d, "2027-01"));
    let (hour, fifty) = (held as i64, (u128::from(held) * 5 / 6) as i64);
    assert!(jan == hour || jan == fifty, "{jan} byte-hours for {held} bytes held an hour");

    // January has not ended: it cannot be sealed yet. Forty minutes later it has.
    let seal = |d: &Daemons| {
        let req = LedgerReq::Seal { pool: "street".into(), period: "2027-01".into() };
        d.call::<Value>(0, Request::Ledger(req))
    };
    let err = seal(&d).unwrap_err().to_string();
    assert!(err.contains("2027-01 is not over yet"), "{err}");
    for _ in 0..4 {
        step(&d);
    }
    seal(&d).unwrap();
    d.wait_for(LIMIT, "the seal to reach bo's node", |d| {
        Ok(!table(d, "2027-01")["sealed_by"].is_null())
    })
    .unwrap();
    assert_eq!(provided(&table(&d, "2027-01")), jan, "a sealed month keeps its figures");
    // February began with nothing recorded; its first record comes an hour after January's.
    let feb: Value = d
        .call(1, Request::Ledger(LedgerReq::Show { pool: Some("street".into()), period: None }))
        .unwrap();
    assert_eq!(feb["period"], "2027-02");
    assert_eq!(provided(&feb["pools"][0]), 0);
    step(&d);
    d.clock.advance(10 * MINUTE);
    d.wait_for(
        LIMIT,
        "bo's usage recorded in February",
        |d| Ok(provided(&table(d, "2027-02")) > 0),
    )
    .unwrap();
}
