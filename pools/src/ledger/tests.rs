use kith_crdt::automerge::transaction::Transactable;
use kith_crdt::automerge::{ChangeHash, ObjType, ScalarValue};
use kith_crdt::{SignedDoc, Signer};
use proptest::prelude::*;

use super::*;
use crate::Pool;

fn signer(n: u8, dev: u8) -> Signer {
    Signer::new(&[n; 32], [dev; 32])
}

/// A pool with an admin (1) and a member (2).
fn pool() -> (Pool, Signer, Signer) {
    let (a, m) = (signer(1, 101), signer(2, 102));
    let mut p = Pool::create(&a, "ada", Pool::charter("street"), 1).unwrap();
    let inv = p.invite(&a, [1; 16], u64::MAX / 2, 1).unwrap();
    p.join(&m, "bob", &inv, 2).unwrap();
    (p, a, m)
}

#[test]
fn periods_parse_and_bound_months() {
    let p = Period::parse("2026-11").unwrap();
    assert_eq!(p.to_string(), "2026-11");
    assert_eq!(Period::of(p.start_ms()), p);
    assert_eq!(Period::of(p.end_ms() - 1), p);
    assert_eq!(Period::of(p.end_ms()), Period::parse("2026-12").unwrap());
    assert_eq!(Period::parse("2026-12").unwrap().next().to_string(), "2027-01");
    // 2026-11-01T00:00:00Z
    assert_eq!(p.start_ms(), 1_793_491_200_000);
    for bad in ["2026-13", "2026-1", "26-11", "2026/11", "x"] {
        assert!(Period::parse(bad).is_err(), "{bad}");
    }
    let e = Period::parse("2099-01").unwrap().not_future(p.start_ms()).unwrap_err();
    assert!(e.to_string().contains("has not begun"), "{e}");
}

#[test]
fn members_write_only_their_own_rows_and_only_upwards() {
    let (mut p, a, m) = pool();
    let id = p.id();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let period = Period::parse("2026-11").unwrap();
    let mut l = Ledger::start(&rules, period).unwrap();
    // Every node starts the same document.
    assert_eq!(Ledger::start(&rules, period).unwrap().doc_mut().id(), l.doc_mut().id());
    l.add(&m, &rules, Counter::EgressReceived, 500, 11).unwrap();
    assert_eq!(l.view().total(&m.author().key, Counter::EgressReceived), 500);
    // A member cannot start a ledger of its own, carry balances, enter costs, or shrink a
    // counter.
    let own = SignedDoc::create(&m, period.start_ms(), &rules, |d| {
        d.put(ROOT, "v", 1)?;
        d.put(ROOT, "kind", LEDGER_KIND)?;
        d.put(ROOT, "pool", ScalarValue::Bytes(id.to_vec()))?;
        d.put(ROOT, "period", period.to_string())?;
        for k in ["carried", "rows", "costs"] {
            d.put_object(ROOT, k, ObjType::Map)?;
        }
        Ok(())
    });
    assert!(own.unwrap_err().to_string().contains("canonical genesis"));
    let e = l.carry(&m, &rules, &BTreeMap::from([(m.author().key, 5)]), 12).unwrap_err();
    assert!(e.to_string().contains("only an admin"), "{e}");
    l.carry(&a, &rules, &BTreeMap::from([(m.author().key, 5)]), 12).unwrap();
    let e = l.carry(&a, &rules, &BTreeMap::from([(m.author().key, 9)]), 12).unwrap_err();
    assert!(e.to_string().contains("carried in once"), "{e}");
    assert_eq!(l.view().carried[&m.author().key], 5);
    let e = l.add_cost(&m, &rules, "c1", "uplink", 1000, 13).unwrap_err();
    assert!(e.to_string().contains("only an admin"), "{e}");
    assert!(l.add(&m, &rules, Counter::EgressReceived, -5, 14).is_err());
    // A forged receipt (signed by someone else) is refused.
    let forged = Receipt::sign(&a, id, period, [9; 32], 10, 1, [0; 32], 15);
    let e = l.file_receipt(&m, &rules, &forged, 15).unwrap_err();
    assert!(e.to_string().contains("must be this member's"), "{e}");
    let mut broken = Receipt::sign(&m, id, period, [9; 32], 10, 1, [0; 32], 15);
    broken.bytes = 10_000;
    let e = l.file_receipt(&m, &rules, &broken, 16).unwrap_err();
    assert!(e.to_string().contains("bad signature"), "{e}");
    let later = Receipt::sign(&m, id, period.next(), [9; 32], 10, 1, [0; 32], 15);
    assert!(l.file_receipt(&m, &rules, &later, 17).is_err());
}

#[test]
fn nobody_can_raise_another_members_row() {
    let (mut p, a, m) = pool();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let period = Period::parse("2026-11").unwrap();
    let mut l = Ledger::start(&rules, period).unwrap();
    l.add(&a, &rules, Counter::StorageUsed, 1, 11).unwrap();
    // Bob writes straight into Ada's row and signs the change properly.
    let (change, sigs) = raw_change(&mut l, &m, |raw| {
        let rows = raw.get(ROOT, "rows").unwrap().unwrap().1;
        let ada = raw.get(&rows, row_key(&a.author().key, &a.author().device)).unwrap().unwrap().1;
        raw.increment(&ada, "storage_used", 1_000_000).unwrap();
    });
    let e = l.doc_mut().ingest(vec![change], &sigs, &rules).unwrap_err();
    assert!(e.to_string().contains("writes only its own row"), "{e}");
    assert_eq!(l.view().total(&a.author().key, Counter::StorageUsed), 1);
}

/// A change `s` writes with `f` straight into a copy of `l` (no checks), signed for `l`.
fn raw_change(
    l: &mut Ledger,
    s: &Signer,
    f: impl FnOnce(&mut kith_crdt::automerge::AutoCommit),
) -> (kith_crdt::automerge::Change, BTreeMap<ChangeHash, Vec<u8>>) {
    let mut raw = l.doc_mut().doc().clone().with_actor(s.actor());
    f(&mut raw);
    let h = raw.commit().unwrap();
    let change = raw.get_change_by_hash(&h).unwrap();
    let msg = [kith_crdt::SIGNING_CONTEXT, &id_of(l)[..], &h.0[..]].concat();
    (change, BTreeMap::from([(h, s.sign(&msg))]))
}

/// Every change of `from` (but the genesis), with signatures, for a fresh copy to ingest.
fn history(
    from: &mut Ledger,
) -> (Vec<kith_crdt::automerge::Change>, BTreeMap<ChangeHash, Vec<u8>>) {
    from.doc_mut().changes_since(&[])
}

#[test]
fn regression_rows_and_costs_of_departed_members_sync_to_newcomers() {
    // Ada (admin) enters a cost, both record usage; Ada hands over to Bob and leaves; Carol
    // joins after that. Carol's node must accept the month's ledger as every node that saw
    // it first did (issue 14: it refused Ada's rows and cost on every sync).
    let (mut p, a, m) = pool();
    let period = Period::parse("2026-11").unwrap();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let mut l = Ledger::start(&rules, period).unwrap();
    l.add_cost(&a, &rules, "c1", "power", 4_250, 10).unwrap();
    l.add(&a, &rules, Counter::StorageProvided, 7, 11).unwrap();
    l.add(&m, &rules, Counter::StorageUsed, 9, 12).unwrap();
    // Ada makes Bob admin and leaves.
    p.set(&a, "role:bob", "admin", 20).unwrap();
    p.leave(&a, 21).unwrap();
    let c = signer(3, 103);
    let inv = p.invite(&m, [3; 16], u64::MAX / 2, 1).unwrap();
    p.join(&c, "carol", &inv, 22).unwrap();
    // Carol's node: a fresh ledger, the pool as it is now.
    let now = p.snapshot();
    let later = LedgerRules { pool: &now };
    let mut fresh = Ledger::start(&later, period).unwrap();
    let (changes, sigs) = history(&mut l);
    fresh.doc_mut().ingest(changes, &sigs, &later).unwrap();
    let v = fresh.view();
    assert_eq!(v.costs.values().map(|c| c.cents).sum::<i64>(), 4_250);
    assert_eq!(v.total(&a.author().key, Counter::StorageProvided), 7);
    assert_eq!(v.total(&m.author().key, Counter::StorageUsed), 9);
    // Having left, Ada can no longer write: neither her row nor a cost.
    let e = fresh.add(&a, &later, Counter::StorageProvided, 1, 30).unwrap_err();
    assert!(e.to_string().contains("own row"), "{e}");
    let e = fresh.add_cost(&a, &later, "c2", "more power", 100, 31).unwrap_err();
    assert!(e.to_string().contains("only an admin"), "{e}");
    // Bob, admin now, can; Carol writes her own row.
    fresh.add_cost(&m, &later, "c3", "uplink", 1_000, 32).unwrap();
    fresh.add(&c, &later, Counter::StorageUsed, 3, 33).unwrap();
}

#[test]
fn a_change_naming_pool_heads_this_node_lacks_waits_for_the_pool() {
    let (mut p, a, m) = pool();
    let period = Period::parse("2026-11").unwrap();
    let old = p.snapshot();
    let c = signer(3, 103);
    let inv = p.invite(&a, [3; 16], u64::MAX / 2, 1).unwrap();
    p.join(&c, "carol", &inv, 22).unwrap();
    let new = p.snapshot();
    let mut l = Ledger::start(&LedgerRules { pool: &new }, period).unwrap();
    l.add(&c, &LedgerRules { pool: &new }, Counter::StorageUsed, 3, 33).unwrap();
    l.add(&m, &LedgerRules { pool: &new }, Counter::StorageUsed, 4, 34).unwrap();
    // A node that has not seen Carol's join yet refuses the batch, saying why; once its
    // pool document has synced, it accepts the same batch.
    let behind = LedgerRules { pool: &old };
    let mut copy = Ledger::start(&behind, period).unwrap();
    let (changes, sigs) = history(&mut l);
    let e = copy.doc_mut().ingest(changes.clone(), &sigs, &behind).unwrap_err();
    assert!(e.to_string().contains("has not received yet"), "{e}");
    assert_eq!(copy.len(), 1, "nothing of a refused batch is applied");
    copy.doc_mut().ingest(changes, &sigs, &LedgerRules { pool: &new }).unwrap();
    assert_eq!(copy.view().total(&c.author().key, Counter::StorageUsed), 3);
}

#[test]
fn changes_without_a_pool_note_are_judged_by_the_entry_as_it_is() {
    // Ledgers written before notes existed: rows of active and departed members stand,
    // rows of removed members do not.
    let (mut p, a, m) = pool();
    let period = Period::parse("2026-11").unwrap();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let mut l = Ledger::start(&rules, period).unwrap();
    let row = |l: &mut Ledger, s: &Signer| {
        let key = row_key(&s.author().key, &s.author().device);
        raw_change(l, s, |raw| {
            let rows = raw.get(ROOT, "rows").unwrap().unwrap().1;
            let r = raw.put_object(&rows, key, ObjType::Map).unwrap();
            raw.put(&r, "storage_used", ScalarValue::counter(5)).unwrap();
            raw.put_object(&r, "receipts", ObjType::Map).unwrap();
        })
    };
    let (bob_row, bob_sig) = row(&mut l, &m);
    p.leave(&m, 5).unwrap();
    let left = p.snapshot();
    let mut copy = Ledger::start(&LedgerRules { pool: &left }, period).unwrap();
    copy.doc_mut().ingest(vec![bob_row.clone()], &bob_sig, &LedgerRules { pool: &left }).unwrap();
    // Had Bob been removed instead, the same legacy row is refused.
    let (mut q, a2, _) = pool();
    assert_eq!(a2.author(), a.author());
    q.remove(&a2, "bob", 5).unwrap();
    let removed = q.snapshot();
    let mut copy = Ledger::start(&LedgerRules { pool: &removed }, period).unwrap();
    let e = copy
        .doc_mut()
        .ingest(vec![bob_row], &bob_sig, &LedgerRules { pool: &removed })
        .unwrap_err();
    assert!(e.to_string().contains("own row"), "{e}");
}

fn id_of(l: &mut Ledger) -> Key {
    l.doc_mut().id()
}

#[test]
fn serving_is_credited_by_receipts_and_what_cannot_be_checked_exactly_is_not_flagged() {
    let (mut p, a, m) = pool();
    let id = p.id();
    let (an, mn) = (a.author().device, m.author().device);
    p.offer(&a, &an, &crate::Offer { storage: 1 << 30, ..Default::default() }, 3).unwrap();
    p.offer(&m, &mn, &crate::Offer { storage: 1 << 30, ..Default::default() }, 4).unwrap();
    let v = p.view();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let period = Period::parse("2026-11").unwrap();
    let mut l = Ledger::start(&rules, period).unwrap();
    // Bob received 300 bytes from Ada's node and signs for them; Ada claims 1000 served (a
    // transfer cut after her node wrote it): she is credited the 300 receipted, not flagged.
    let r = Receipt::sign(&m, id, period, an, 300, 2, [7; 32], 20);
    l.file_receipt(&m, &rules, &r, 20).unwrap();
    l.add(&m, &rules, Counter::EgressReceived, 300, 21).unwrap();
    l.add(&a, &rules, Counter::EgressServed, 1000, 22).unwrap();
    l.add(&a, &rules, Counter::StorageProvided, 5000, 23).unwrap();
    let flags = check_evidence(&l.view(), &v, i64::MAX / 4);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].member, a.author().key);
    assert!(flags[0].what.contains("no passed audit"), "{flags:?}");
    assert_eq!(receipted_served(&l.view(), &v)[&a.author().key], 300);
    let st = settle(&l.view(), CostRule::Proportional, &[a.author().key, m.author().key], &v);
    assert_eq!(st[0].served_receipted, 300);
    // Bob signs for 6,300 in all but reports receiving 300: he would pay for less than he
    // signed for, and that is flagged.
    let more = Receipt::sign(&m, id, period, an, 6_300, 3, [8; 32], 24);
    l.file_receipt(&m, &rules, &more, 24).unwrap();
    let flags = check_evidence(&l.view(), &v, i64::MAX / 4);
    let bobs: Vec<_> = flags.iter().filter(|f| f.member == m.author().key).collect();
    assert!(bobs.len() == 1 && bobs[0].what.contains("signed receipts for 6300"), "{flags:?}");
    l.add(&m, &rules, Counter::EgressReceived, 6_000, 25).unwrap();
    let flags = check_evidence(&l.view(), &v, i64::MAX / 4);
    assert!(flags.iter().all(|f| f.member == a.author().key), "{flags:?}");
    // Ada is credited what Bob signed for, though she counted less.
    assert_eq!(receipted_served(&l.view(), &v)[&a.author().key], 6_300);
    // A receipt may only grow.
    let less = Receipt::sign(&m, id, period, an, 10, 3, [8; 32], 26);
    let e = l.file_receipt(&m, &rules, &less, 26).unwrap_err();
    assert!(e.to_string().contains("only grow"), "{e}");
}

#[test]
fn a_seal_is_an_admins_once_for_the_month_before() {
    let (mut p, a, m) = pool();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let oct = Period::parse("2026-10").unwrap();
    let mut old = Ledger::start(&rules, oct).unwrap();
    old.add(&m, &rules, Counter::StorageProvided, 730 << 30, 11).unwrap();
    let members = [a.author().key, m.author().key];
    let seal = Seal::make(&old.view(), CostRule::Credits, &members, &p.view(), &a);
    assert!(seal.signature_ok());
    assert!(seal.carried()[&m.author().key] > 0, "{seal:?}");
    let mut nov = Ledger::start(&rules, oct.next()).unwrap();
    let e = nov.record_seal(
        &m,
        &rules,
        &Seal::make(&old.view(), CostRule::Credits, &members, &p.view(), &m),
        20,
    );
    assert!(e.unwrap_err().to_string().contains("only an admin"));
    // A seal of another month, or one whose bytes were altered, is refused.
    let mut dec = Ledger::start(&rules, oct.next().next()).unwrap();
    let e = dec.record_seal(&a, &rules, &seal, 21).unwrap_err();
    assert!(e.to_string().contains("2026-11"), "{e}");
    let mut forged = seal.clone();
    forged.owes[0].2 += 1_000_000;
    let e = nov.record_seal(&a, &rules, &forged, 22).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    nov.record_seal(&a, &rules, &seal, 23).unwrap();
    assert_eq!(nov.view().sealed.as_ref(), Some(&seal));
    assert_eq!(nov.view().carried, seal.carried());
    let e = nov.record_seal(&a, &rules, &seal, 24).unwrap_err();
    assert!(e.to_string().contains("sealed once"), "{e}");
    // What a node saved reads back the same.
    let back = Ledger::load(&nov.save()).unwrap();
    assert_eq!(back.view(), nov.view());
}

#[test]
fn settlement_splits_costs_exactly() {
    assert_eq!(split_cents(100, &[1.0, 1.0, 1.0]), vec![34, 33, 33]);
    assert_eq!(split_cents(100, &[0.0, 0.0]), vec![50, 50]);
    assert_eq!(split_cents(1000, &[3.0, 1.0, 0.0]), vec![750, 250, 0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Increments from two devices of one member and from another member, made apart and
    /// merged in any order, add up to the sum of all of them.
    #[test]
    fn partitioned_increments_merge_to_the_sum(
        xs in proptest::collection::vec(1i64..1_000_000, 1..12),
        ys in proptest::collection::vec(1i64..1_000_000, 1..12),
        zs in proptest::collection::vec(1i64..1_000_000, 1..12),
        flip in any::<bool>(),
    ) {
        let (mut p, a, m) = pool();
        let m2 = signer(2, 103); // Bob's second device
        let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
        let period = Period::parse("2026-11").unwrap();
        let mut base = Ledger::start(&rules, period).unwrap();
        let bytes = base.save();
        let copy = |b: &[u8]| Ledger::load(b).unwrap();
        let (mut l1, mut l2, mut l3) = (copy(&bytes), copy(&bytes), copy(&bytes));
        for x in &xs { l1.add(&m, &rules, Counter::StorageUsed, *x, 11).unwrap(); }
        for y in &ys { l2.add(&m2, &rules, Counter::StorageUsed, *y, 12).unwrap(); }
        for z in &zs { l3.add(&a, &rules, Counter::StorageProvided, *z, 13).unwrap(); }
        let mut parts = vec![l1, l2, l3];
        if flip { parts.reverse(); }
        let mut merged = copy(&bytes);
        for part in &mut parts {
            let (changes, sigs) = part.doc_mut().changes_since(&[]);
            merged.doc_mut().ingest(changes, &sigs, &rules).unwrap();
        }
        let view = merged.view();
        let bob = m.author().key;
        prop_assert_eq!(view.total(&bob, Counter::StorageUsed), xs.iter().sum::<i64>() + ys.iter().sum::<i64>());
        prop_assert_eq!(view.total(&a.author().key, Counter::StorageProvided), zs.iter().sum::<i64>());
        // Costs always split exactly.
        let st = settle(&view, CostRule::Proportional, &[a.author().key, bob], &p.view());
        prop_assert_eq!(st.iter().map(|s| s.owes_cents).sum::<i64>(), 0);
    }
}

#[test]
fn a_row_that_would_not_read_is_refused_and_the_ledger_keeps_reading() {
    let (mut p, a, m) = pool();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let period = Period::parse("2026-11").unwrap();
    let mut l = Ledger::start(&rules, period).unwrap();
    l.add(&a, &rules, Counter::StorageUsed, 1, 11).unwrap();
    let own = row_key(&m.author().key, &m.author().device);
    let mut forged = |f: &dyn Fn(&mut kith_crdt::automerge::AutoCommit)| {
        let (change, sigs) = raw_change(&mut l, &m, f);
        l.doc_mut().ingest(vec![change], &sigs, &rules).map(|_| ())
    };
    // Bob's own row as an empty map (no receipts), as a number, with a counter as text.
    let empty = forged(&|d| {
        let rows = d.get(ROOT, "rows").unwrap().unwrap().1;
        d.put_object(&rows, own.as_str(), ObjType::Map).unwrap();
    });
    let scalar = forged(&|d| {
        let rows = d.get(ROOT, "rows").unwrap().unwrap().1;
        d.put(&rows, own.as_str(), 7).unwrap();
    });
    let text = forged(&|d| {
        let rows = d.get(ROOT, "rows").unwrap().unwrap().1;
        let r = d.put_object(&rows, own.as_str(), ObjType::Map).unwrap();
        d.put_object(&r, "receipts", ObjType::Map).unwrap();
        d.put(&r, "storage_used", "lots").unwrap();
    });
    let e = empty.unwrap_err();
    assert!(e.to_string().contains("breaks the ledger"), "{e}");
    let e = scalar.unwrap_err();
    assert!(e.to_string().contains("is a map"), "{e}");
    assert!(text.is_err(), "a counter as text");
    // Nothing was kept: the ledger reads, with Ada's figure only.
    assert_eq!(l.view().total(&a.author().key, Counter::StorageUsed), 1);
    assert_eq!(l.view().rows.len(), 1);
    // Bob's real first record still goes in.
    l.add(&m, &rules, Counter::StorageUsed, 2, 12).unwrap();
    assert_eq!(l.view().total(&m.author().key, Counter::StorageUsed), 2);
    // Once the row exists (checked by what each write is, no longer read whole again): its
    // partners as a number, a counter replaced by text, a receipt as a number.
    let mut forged = |f: &dyn Fn(&mut kith_crdt::automerge::AutoCommit)| {
        let (change, sigs) = raw_change(&mut l, &m, f);
        l.doc_mut().ingest(vec![change], &sigs, &rules).map(|_| ())
    };
    let row = |d: &kith_crdt::automerge::AutoCommit| {
        let rows = d.get(ROOT, "rows").unwrap().unwrap().1;
        d.get(&rows, own.as_str()).unwrap().unwrap().1
    };
    let partners = forged(&|d| {
        let r = row(d);
        d.put(&r, "partners", 3).unwrap();
    });
    let counter = forged(&|d| {
        let r = row(d);
        d.put(&r, "storage_used", "lots").unwrap();
    });
    let receipt = forged(&|d| {
        let r = row(d);
        let rec = d.get(&r, "receipts").unwrap().unwrap().1;
        d.put(&rec, kith_crdt::hex(&[7; 32]), 5).unwrap();
    });
    for (what, e, says) in [
        ("partners", partners, "is a map"),
        ("counter", counter, "only grows"),
        ("receipt", receipt, "not bytes"),
    ] {
        let e = e.expect_err(what);
        assert!(e.to_string().contains(says), "{what}: {e}");
    }
    assert_eq!(l.view().total(&m.author().key, Counter::StorageUsed), 2);
}

/// A member that stores chunks and leaves before anyone could audit it is not flagged for
/// ever after (found by `testnet chaos --minutes 1 --seed 3`: every node's `kith ledger
/// verify` flagged the departed node 6 for good); one that stayed long enough to be audited
/// and never passed is.
#[test]
fn a_member_that_left_before_its_first_audit_is_not_flagged_for_good() {
    let period = Period::parse("2026-11").unwrap();
    let t = period.start_ms() + 1_000;
    let every = crate::view::DEFAULT_AUDIT_EVERY_MS as i64;
    let stays_until = |left_after: i64| {
        let (mut p, a, m) = pool();
        let mn = m.author().device;
        p.offer(&m, &mn, &crate::Offer { storage: 1 << 30, ..Default::default() }, t).unwrap();
        let o = crate::view::PoolObject {
            manifest: [9; 32],
            bytes: 10,
            blobs: 1,
            name: crate::names::ObjectName::Sealed(vec![0; 30]),
            at_ms: t,
        };
        p.add_object(&a, &[9; 32], &o, t).unwrap();
        let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
        let mut l = Ledger::start(&rules, period).unwrap();
        l.add(&m, &rules, Counter::StorageProvided, 8918, t + left_after / 2).unwrap();
        p.leave(&m, t + left_after).unwrap();
        assert_eq!(p.view().members[&m.author().key].left_ms, Some(t + left_after));
        // Checked long after, when any audit would have run.
        check_evidence(&l.view(), &p.view(), t + 100 * every)
    };
    assert_eq!(stays_until(every / 2), vec![], "left before its first audit could run");
    let flags = stays_until(5 * every);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert!(flags[0].what.contains("8918 byte-hours of storage provided with no passed audit"));
}

/// A usage record the node could not write down (a holder's disk full, found by `testnet
/// chaos`) is not made: it stayed in memory and went to the peers while the caller heard it
/// failed and recorded the same storage again, so the pool counted it twice.
#[test]
fn a_record_that_cannot_be_saved_is_not_made_and_counts_once_when_it_is() {
    let (mut p, _a, m) = pool();
    let snap = p.snapshot();
    let home = std::env::temp_dir().join(format!(
        "kith-ledger-unsaved-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let ledgers = Ledgers::new(&home);
    let period = Period::parse("2026-11").unwrap();
    let me = m.author().key;
    let record = |l: &mut Ledger, rules: &LedgerRules<'_>| {
        l.record(&m, rules, &[(Counter::StorageProvided, 700)], &[], &[], period.start_ms() + 10)
    };
    let total = |ls: &Ledgers| {
        ls.with(&snap, period, |l, _| Ok(l.view().total(&me, Counter::StorageProvided))).unwrap()
    };
    assert_eq!(total(&ledgers), 0);
    // The file cannot be replaced: a folder stands where it goes.
    let path = ledgers.files(snap.id()).path::<Ledger>(&period.to_string());
    std::fs::create_dir_all(&path).unwrap();
    let err = ledgers.with(&snap, period, record).unwrap_err();
    assert!(err.to_string().contains("cannot save"), "{err}");
    assert_eq!(total(&ledgers), 0, "the record was kept although it could not be saved");
    // Once the disk takes it again, the caller records the same storage, once.
    std::fs::remove_dir(&path).unwrap();
    ledgers.with(&snap, period, record).unwrap();
    assert_eq!(total(&ledgers), 700);
    assert_eq!(total(&Ledgers::new(&home)), 700, "the record is on disk");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn cpu_given_is_credited_by_the_takers_receipts_and_priced_by_the_charter() {
    let (mut p, a, m) = pool();
    let id = p.id();
    let (an, mn) = (a.author().device, m.author().device);
    p.offer(&a, &an, &crate::Offer { storage: 1 << 30, ..Default::default() }, 3).unwrap();
    p.offer(&m, &mn, &crate::Offer { storage: 1 << 30, ..Default::default() }, 4).unwrap();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let period = Period::parse("2026-11").unwrap();
    let mut l = Ledger::start(&rules, period).unwrap();
    let hour = 3600 * FUEL_PER_CPU_SECOND;
    // Ada's node ran two of Bob's jobs: 1.5 reference CPU-hours in all. Bob signs for them.
    l.add(&a, &rules, Counter::CpuGiven, (hour * 3 / 2) as i64, 10).unwrap();
    let r1 = Receipt::sign_cpu(&m, id, period, an, hour, 1, [1; 32], 11);
    l.record(&m, &rules, &[(Counter::CpuTaken, hour as i64)], &[], &[r1], 11).unwrap();
    let r2 = Receipt::sign_cpu(&m, id, period, an, hour * 3 / 2, 2, [2; 32], 12);
    l.record(&m, &rules, &[(Counter::CpuTaken, (hour / 2) as i64)], &[], &[r2], 12).unwrap();
    let who = [a.author().key, m.author().key];
    let v = p.view();
    assert_eq!(receipted_cpu(&l.view(), &v)[&a.author().key], (hour * 3 / 2) as i64);
    assert!(check_evidence(&l.view(), &v, 20).iter().all(|f| !f.what.contains("CPU")));
    // No price: CPU counts as credit, a CPU-hour as one unit.
    let st = settle(&l.view(), CostRule::Proportional, &who, &v);
    assert!((st[0].cpu_given_h - 1.5).abs() < 1e-9 && (st[1].cpu_taken_h - 1.5).abs() < 1e-9);
    assert!((st[0].contribution - 1.5).abs() < 1e-9 && (st[1].usage - 1.5).abs() < 1e-9);
    assert_eq!((st[0].cpu_cents, st[1].cpu_cents), (0, 0));
    // At 0.02 a CPU-hour, Bob owes 3 cents and Ada is owed them; nothing counts as units.
    p.set(&a, "cpu_price", "0.02", 30).unwrap();
    assert_eq!(p.view().charter.cpu_price_micro, 20_000);
    let st = settle(&l.view(), CostRule::Proportional, &who, &p.view());
    assert_eq!((st[0].cpu_cents, st[1].cpu_cents), (-3, 3));
    assert!(st[0].contribution.abs() < 1e-9 && st[1].usage.abs() < 1e-9);
    for bad in ["-1", "0.0000001", "two", "", "."] {
        assert!(p.set(&a, "cpu_price", bad, 31).is_err(), "{bad}");
    }
    // A receipt only grows; a data receipt cannot pass for a CPU receipt; nobody signs for
    // another member; signing for more than it reports taking is flagged.
    let less = Receipt::sign_cpu(&m, id, period, an, hour, 3, [3; 32], 13);
    let e = l.record(&m, &rules, &[(Counter::CpuTaken, 1)], &[], &[less], 13).unwrap_err();
    assert!(e.to_string().contains("only grow"), "{e}");
    let data = Receipt::sign(&m, id, period, an, hour * 2, 3, [3; 32], 14);
    let e = l.record(&m, &rules, &[(Counter::CpuTaken, 1)], &[], &[data], 14).unwrap_err();
    assert!(e.to_string().contains("bad signature"), "{e}");
    let adas = Receipt::sign_cpu(&a, id, period, an, hour * 2, 3, [3; 32], 15);
    let e = l.record(&m, &rules, &[(Counter::CpuTaken, 1)], &[], &[adas], 15).unwrap_err();
    assert!(e.to_string().contains("this member's"), "{e}");
    let more = Receipt::sign_cpu(&m, id, period, an, hour * 5, 3, [3; 32], 16);
    l.record(&m, &rules, &[(Counter::CpuTaken, 1)], &[], &[more], 16).unwrap();
    let flags = check_evidence(&l.view(), &v, 20);
    assert!(
        flags.iter().any(|f| f.member == m.author().key && f.what.contains("CPU receipts for")),
        "{flags:?}"
    );
    // The view reads back what was written, and the document reloads.
    let l2 = Ledger::load(&l.save()).unwrap();
    assert_eq!(l2.view().rows[&(m.author().key, mn)].cpu_receipts[&an].blobs, 3);
    assert_eq!(l2.view(), l.view());
}

#[test]
fn a_devices_counts_with_federated_partners_only_grow_and_settle_at_the_agreements_prices() {
    use kith_federation::{Acceptance, Agreement, Lend, Offer, Price};
    let (mut p, a, m) = pool();
    // Street (ada's) and hill (bea's) agree: each GiB-month at 2.00, each GB at 0.50.
    let bea = signer(3, 103);
    let hill = Pool::create(&bea, "bea", Pool::charter("hill"), 1).unwrap();
    let price = Price { storage_per_gib_month: 2_000_000, egress_per_gb: 500_000 };
    let lend = Lend { storage: 1 << 30, ..Default::default() };
    let o = Offer::sign(&a, [4; 16], p.id(), "street", lend, price, 365, 30, 3_600_000, vec![]);
    p.add_fed_offer(&a, &o, 5).unwrap();
    let acc = Acceptance::sign(&bea, &o, hill.id(), "hill", lend, 6, vec![]);
    let ag = Agreement { offer: o, acceptance: acc };
    p.add_agreement(&a, &ag, 7).unwrap();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let period = Period::parse("2026-11").unwrap();
    let mut l = Ledger::start(&rules, period).unwrap();
    let id = ag.id();
    let gib_month = (1i64 << 30) * 7305 / 10;
    // Ada's node held a GiB for hill for a month and served it 2 GiB, twice; bob's had 3
    // GiB-months held at hill and 1 GiB back from it.
    let ada = PartnerCounts { held_for: gib_month, served_to: 2 << 30, ..Default::default() };
    l.record_partners(&a, &rules, &[(id, ada)], 11).unwrap();
    l.record_partners(&a, &rules, &[(id, ada)], 12).unwrap();
    // Bob's node audited hill's holders 5 times, once failing; ada's node answered hill's
    // audits twice.
    let bob = PartnerCounts {
        held_by: 3 * gib_month,
        received_from: 1 << 30,
        audits_passed: 4,
        audits_failed: 1,
        ..Default::default()
    };
    l.record_partners(&m, &rules, &[(id, bob)], 13).unwrap();
    let answered = PartnerCounts { proofs_given: 2, ..Default::default() };
    l.record_partners(&a, &rules, &[(id, answered)], 14).unwrap();
    // Ada's relay carried 1 GB from hill's nodes: priced as egress she gave.
    let relayed = PartnerCounts { relayed_for: 1_000_000_000, ..Default::default() };
    l.record_partners(&a, &rules, &[(id, relayed)], 15).unwrap();
    // Bob's node reached hill's through hill's relay, 2 GB: priced as egress taken.
    let through = PartnerCounts { relayed_by: 2_000_000_000, ..Default::default() };
    l.record_partners(&m, &rules, &[(id, through)], 16).unwrap();
    // Hill's member bea, on her node, signed ada's node (its holder) a receipt for 1.5 of the
    // 2 GiB-months ada's node says it held, and 1 GiB sent back; ada's node files it. Bob's
    // node signed hill's holder one for what it held of his placement, and files it too.
    let bea_node = bea.author().device;
    let theirs = Receipt::sign_partner(
        &bea,
        id,
        period,
        a.author().device,
        bea_node,
        1 << 30,
        3 * gib_month as u64 / 2,
        17,
    );
    assert!(theirs.partner_signature_ok() && !theirs.signature_ok() && !theirs.cpu_signature_ok());
    // Filed beside hill's roster (signed by hill's signer of the agreement), which must name
    // the signer: with a roster that does not, or with street's own, it is not filed.
    let hill_roster =
        kith_federation::Roster::sign(&bea, id, hill.id(), &[bea.author().key], 10, None);
    let other_roster = kith_federation::Roster::sign(&bea, id, hill.id(), &[[1; 32]], 11, None);
    let not_named = (theirs.clone(), other_roster.clone());
    assert_eq!(l.file_partner_receipts(&a, &rules, &[], &[not_named], 17).unwrap(), 0);
    let street_roster =
        kith_federation::Roster::sign(&a, id, p.id(), &[bea.author().key], 10, None);
    let e = l
        .file_partner_receipts(&a, &rules, &[], &[(theirs.clone(), street_roster)], 17)
        .unwrap_err();
    assert!(e.to_string().contains("not the partner's"), "{e}");
    assert_eq!(
        l.file_partner_receipts(&a, &rules, &[], &[(theirs.clone(), hill_roster.clone())], 17)
            .unwrap(),
        1
    );
    let hill_holder = [8; 32];
    let mine = Receipt::sign_partner(
        &m,
        id,
        period,
        hill_holder,
        m.author().device,
        1 << 30,
        3 * gib_month as u64,
        18,
    );
    assert_eq!(
        l.file_partner_receipts(&m, &rules, std::slice::from_ref(&mine), &[], 18).unwrap(),
        1
    );
    // The same receipts again are left out (nothing grew).
    assert_eq!(
        l.file_partner_receipts(&a, &rules, &[], &[(theirs.clone(), hill_roster.clone())], 19)
            .unwrap(),
        0
    );
    let v = l.view();
    let row = &v.rows[&(a.author().key, a.author().device)];
    assert_eq!(row.partner_receipts[&(id, bea_node)], theirs);
    assert_eq!(
        v.rows[&(m.author().key, m.author().device)].partner_signed[&(id, hill_holder)],
        mine
    );
    assert_eq!(row.partners[&id].held_for, 2 * gib_month);
    assert_eq!(row.partners[&id].served_to, 4 << 30);
    // The egress street gave hill, which one `--lend-egress` bounds: served and relayed
    // together (what bob's node took through hill's relay is not street's egress); ada's
    // relay, counting its own bytes live, reads the rest.
    assert_eq!(v.egress_to(&id, None), (4u64 << 30) + 1_000_000_000);
    let ada_row = (a.author().key, a.author().device);
    assert_eq!(v.egress_to(&id, Some(&ada_row)), 4u64 << 30);
    let bob_row = (m.author().key, m.author().device);
    assert_eq!(v.egress_to(&id, Some(&bob_row)), (4u64 << 30) + 1_000_000_000);
    assert_eq!(v.egress_to(&[0; 32], None), 0, "another agreement's egress is its own");
    // One line for hill: street owes it for 3 GiB-months, 1 GiB taken and 2 GB its relay
    // carried, less the 1.5 GiB-months hill receipted of the 2 ada's node recorded, 4 GiB
    // sent and 1 GB relayed for it: 6.00 + 0.54 + 1.00 - 3.00 - 2.15 - 0.50 = 1.89.
    let lines = partner_lines(&v, &p.view());
    assert_eq!(lines.len(), 1);
    let h = &lines[0];
    assert_eq!((h.partner.as_str(), h.priced), ("hill", true));
    assert!((h.held_for - 1.5).abs() < 1e-9 && (h.held_by - 3.0).abs() < 1e-9, "{h:?}");
    assert_eq!((h.counts.held_for, h.receipted_held_for), (2 * gib_month, 3 * gib_month / 2));
    assert_eq!(
        (h.receipted_sent, h.signed_held_by, h.signed_received),
        (1 << 30, 3 * gib_month, 1 << 30)
    );
    assert_eq!(h.owes_cents, 189, "{h:?}");
    assert_eq!(h.counts.relayed_for, 1_000_000_000, "{h:?}");
    assert_eq!(h.counts.relayed_by, 2_000_000_000, "{h:?}");
    // The audits are the line's evidence, summed over devices; they cost nothing.
    assert_eq!((h.counts.audits_passed, h.counts.audits_failed), (4, 1), "{h:?}");
    assert_eq!((h.counts.proofs_given, h.counts.proofs_failed), (2, 0), "{h:?}");
    assert!((h.credit - (1.5 - 1e9 / (1u64 << 30) as f64)).abs() < 1e-9, "{h:?}");
    // Without prices, the same figures are credit both ways (an agreement this view lacks
    // is named by its id).
    let lines = partner_lines(&v, &pool().0.view());
    assert_eq!((lines[0].priced, lines[0].owes_cents), (false, 0));
    assert!(lines[0].partner.starts_with("agreement "), "{:?}", lines[0]);

    // Counts only grow; a device writes only its own; only known counts; only agreements.
    let down = PartnerCounts { held_for: -1, ..Default::default() };
    assert!(l.record_partners(&a, &rules, &[(id, down)], 15).is_err());
    let path = |raw: &kith_crdt::automerge::AutoCommit, s: &Signer| {
        let rows = raw.get(ROOT, "rows").unwrap().unwrap().1;
        let r = raw.get(&rows, row_key(&s.author().key, &s.author().device)).unwrap().unwrap().1;
        let ps = raw.get(&r, "partners").unwrap().unwrap().1;
        raw.get(&ps, hex(&id)).unwrap().unwrap().1
    };
    let refused = |l: &mut Ledger, f: &dyn Fn(&mut kith_crdt::automerge::AutoCommit)| {
        let (change, sigs) = raw_change(l, &m, |raw| f(raw));
        l.doc_mut().ingest(vec![change], &sigs, &rules).unwrap_err().to_string()
    };
    let e = refused(&mut l, &|raw| {
        let at = path(raw, &a);
        raw.increment(&at, "held_for", 1 << 40).unwrap();
    });
    assert!(e.contains("writes only its own row"), "{e}");
    let e = refused(&mut l, &|raw| {
        let at = path(raw, &m);
        raw.increment(&at, "held_by", -5).unwrap();
    });
    assert!(e.contains("may only grow"), "{e}");
    let e = refused(&mut l, &|raw| {
        let at = path(raw, &m);
        raw.put(&at, "bonus", ScalarValue::counter(5)).unwrap();
    });
    assert!(e.contains("no `bonus`"), "{e}");
    let e = refused(&mut l, &|raw| {
        let rows = raw.get(ROOT, "rows").unwrap().unwrap().1;
        let r = raw.get(&rows, row_key(&m.author().key, &m.author().device)).unwrap().unwrap().1;
        let ps = raw.get(&r, "partners").unwrap().unwrap().1;
        raw.put_object(&ps, "not-an-agreement", ObjType::Map).unwrap();
    });
    assert!(e.contains("is not an agreement"), "{e}");
    // Partner receipts: a bad signature, one filed under another node, one of another
    // agreement, one passed off as this member's, one that shrinks: refused.
    let put_receipt = |l: &mut Ledger, sub: &str, under: Key, r: &Receipt| {
        let r = r.clone();
        let sub = sub.to_string();
        refused(l, &|raw| {
            let at = path(raw, &m);
            let rec = match raw.get(&at, sub.as_str()).unwrap() {
                Some((_, o)) => o,
                None => raw.put_object(&at, sub.as_str(), ObjType::Map).unwrap(),
            };
            raw.put(&rec, hex(&under), ScalarValue::Bytes(r.to_bytes())).unwrap();
        })
    };
    let mut bad = mine.clone();
    bad.blobs += 1;
    let e = put_receipt(&mut l, "signed", hill_holder, &bad);
    assert!(e.contains("bad signature"), "{e}");
    let e = put_receipt(&mut l, "signed", [9; 32], &mine);
    assert!(e.contains("filed under another node"), "{e}");
    let other =
        Receipt::sign_partner(&m, [5; 32], period, hill_holder, m.author().device, 1, 1, 19);
    let e = put_receipt(&mut l, "signed", hill_holder, &other);
    assert!(e.contains("for its agreement"), "{e}");
    let e = put_receipt(
        &mut l,
        "signed",
        [8; 32],
        &Receipt::sign_partner(
            &bea,
            id,
            period,
            hill_holder,
            m.author().device,
            1 << 31,
            1 << 50,
            19,
        ),
    );
    assert!(e.contains("must be its member's"), "{e}");
    let less = Receipt::sign_partner(&m, id, period, hill_holder, m.author().device, 1, 1, 19);
    let e = put_receipt(&mut l, "signed", hill_holder, &less);
    assert!(e.contains("may only grow"), "{e}");
    // One the partner signed for bob's node as its holder names his node as the holder.
    let for_ada = Receipt::sign_partner(&bea, id, period, a.author().device, bea_node, 5, 5, 19);
    let e = put_receipt(&mut l, "receipts", bea_node, &for_ada);
    assert!(e.contains("filed under another node"), "{e}");
    // One for bob's node with no roster beside it is refused, however well signed.
    let for_bob = Receipt::sign_partner(&bea, id, period, m.author().device, bea_node, 5, 5, 19);
    let e = put_receipt(&mut l, "receipts", bea_node, &for_bob);
    assert!(e.contains("beside the partner's roster"), "{e}");
    assert_eq!(l.view().rows[&(m.author().key, m.author().device)].partner_signed.len(), 1);
    let kept = PartnerCounts { relayed_by: 2_000_000_000, ..bob };
    assert_eq!(l.view().rows[&(m.author().key, m.author().device)].partners[&id], kept);
    // `kith ledger verify`: bob's node recorded what it signed for; once it signs hill's
    // holder for more than it recorded (under-reporting what it took), it is flagged.
    let partner_flags = |l: &Ledger| -> Vec<String> {
        let flags = check_evidence(&l.view(), &p.view(), 20);
        flags.into_iter().filter(|f| f.what.contains("partner")).map(|f| f.what).collect()
    };
    assert_eq!(partner_flags(&l), Vec::<String>::new());
    let more = Receipt::sign_partner(
        &m,
        id,
        period,
        hill_holder,
        m.author().device,
        1 << 30,
        4 * gib_month as u64,
        20,
    );
    l.file_partner_receipts(&m, &rules, &[more], &[], 20).unwrap();
    let flags = partner_flags(&l);
    assert!(flags.len() == 1 && flags[0].contains("signed it receipts for"), "{flags:?}");
}

/// A balance carried in under a key that names no member (the reader needs a member key) is
/// refused, even from an admin: it would leave the period unreadable on every node.
#[test]
fn a_balance_carried_for_no_member_is_refused() {
    let (mut p, a, m) = pool();
    let snap = p.snapshot();
    let rules = LedgerRules { pool: &snap };
    let mut l = Ledger::start(&rules, Period::parse("2026-11").unwrap()).unwrap();
    let (change, sigs) = raw_change(&mut l, &a, |d| {
        let cs = d.get(ROOT, "carried").unwrap().unwrap().1;
        d.put(&cs, "garbage", 1).unwrap();
    });
    let e = l.doc_mut().ingest(vec![change], &sigs, &rules).unwrap_err();
    assert!(e.to_string().contains("for a member"), "{e}");
    // A member's key is taken, and the ledger reads.
    let (change, sigs) = raw_change(&mut l, &a, |d| {
        let cs = d.get(ROOT, "carried").unwrap().unwrap().1;
        d.put(&cs, kith_crdt::hex(&m.author().key), 5).unwrap();
    });
    l.doc_mut().ingest(vec![change], &sigs, &rules).unwrap();
    assert_eq!(l.view().carried.get(&m.author().key), Some(&5));
}
