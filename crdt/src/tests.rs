use std::collections::BTreeMap;

use automerge::{ObjType, ROOT, ReadDoc, transaction::Transactable};

use crate::*;

/// A toy rule set: the genesis author owns everything; others write only `own/<their key>`.
struct Toy;

impl Authorizer for Toy {
    fn authorise(&self, c: &Check<'_>) -> Result<(), String> {
        if c.genesis {
            return Ok(());
        }
        let owner = match c.doc.get_at(ROOT, "owner", c.deps).unwrap() {
            Some((v, _)) => v.as_bytes().unwrap().to_vec(),
            None => return Err("no owner".into()),
        };
        if owner == c.author.key {
            return Ok(());
        }
        for p in c.patches {
            let path = patch_path(p);
            if path.len() < 2 || path[0] != "own" || path[1] != hex(&c.author.key) {
                return Err(format!("may not write {}", path.join("/")));
            }
        }
        Ok(())
    }
}

fn signer(n: u8) -> Signer {
    Signer::new(&[n; 32], [n + 100; 32])
}

fn genesis(owner: &Signer) -> SignedDoc {
    let key = owner.author().key;
    SignedDoc::create(owner, 1, &Toy, |d| {
        d.put(ROOT, "owner", key.to_vec())?;
        d.put_object(ROOT, "own", ObjType::Map)?;
        Ok(())
    })
    .unwrap()
}

fn sync_pair(a: &mut SignedDoc, b: &mut SignedDoc) -> Result<(), DocError> {
    let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
    for _ in 0..20 {
        let ma = a.sync_out(&mut sa);
        if let Some(m) = &ma {
            b.sync_in(&mut sb, m, &Toy)?;
        }
        let mb = b.sync_out(&mut sb);
        if let Some(m) = &mb {
            a.sync_in(&mut sa, m, &Toy)?;
        }
        if ma.is_none() && mb.is_none() {
            return Ok(());
        }
    }
    panic!("sync did not finish");
}

fn load_copy(d: &mut SignedDoc) -> SignedDoc {
    SignedDoc::load(&d.save("toy"), "toy").unwrap()
}

fn own_entry(d: &mut SignedDoc, s: &Signer, v: i64) {
    let k = hex(&s.author().key);
    d.change(s, 2, &Toy, |d| {
        let own = d.get(ROOT, "own")?.unwrap().1;
        d.put(&own, &k, v)
    })
    .unwrap();
}

#[test]
fn patch_paths_name_the_key_written() {
    let o = signer(1);
    let mut d = genesis(&o);
    let (mut changes, sigs) = d.changes_since(&[]);
    assert_eq!(changes.len(), 1);
    let mut a = automerge::AutoCommit::new();
    a.apply_changes([changes.remove(0)]).unwrap();
    let heads = a.get_heads();
    let paths: Vec<_> = a.diff(&[], &heads).iter().map(patch_path).collect();
    assert!(paths.contains(&vec!["owner".to_string()]), "{paths:?}");
    assert_eq!(sigs.len(), 1);
}

#[test]
fn members_converge_and_survive_save_and_load() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let mut b = load_copy(&mut a);
    own_entry(&mut b, &m, 7);
    own_entry(&mut a, &o, 9);
    sync_pair(&mut a, &mut b).unwrap();
    assert_eq!(a.heads(), b.heads());
    assert_eq!(a.len(), 3);
    let c = load_copy(&mut b);
    assert_eq!(c.len(), 3);
}

/// A change by `m` that takes ownership, written straight into a copy of `b` (no checks), with
/// a valid signature for `id`.
fn forged_takeover(
    b: &SignedDoc,
    m: &Signer,
    id: &Key,
) -> (automerge::AutoCommit, automerge::Change, BTreeMap<automerge::ChangeHash, signed::Sig>) {
    let mut raw = b.doc.clone().with_actor(m.actor());
    raw.put(ROOT, "owner", m.author().key.to_vec()).unwrap();
    let h = raw.commit().unwrap();
    let change = raw.get_change_by_hash(&h).unwrap();
    let mut sigs = BTreeMap::new();
    sigs.insert(h, m.sign(&signed::signing_message(id, &h)));
    (raw, change, sigs)
}

#[test]
fn unauthorised_change_is_rejected_whole_and_state_kept() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let b = load_copy(&mut a);
    let (_, bad, sigs) = forged_takeover(&b, &m, a.id());
    let before = a.heads();
    let err = a.ingest(vec![bad], &sigs, &Toy).unwrap_err();
    assert!(matches!(err, DocError::Unauthorised { .. }), "{err}");
    assert!(err.to_string().contains("may not write owner"), "{err}");
    assert_eq!(a.heads(), before);
}

#[test]
fn broken_signature_and_foreign_genesis_are_rejected() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let mut b = load_copy(&mut a);
    own_entry(&mut b, &m, 1);
    let (changes, mut sigs) = b.changes_since(&a.heads());
    for s in sigs.values_mut() {
        s[0] ^= 1;
    }
    let err = a.ingest(changes.clone(), &sigs, &Toy).unwrap_err();
    assert!(matches!(err, DocError::BadSignature { .. }), "{err}");
    // Signed for another document: the signature binds the document id.
    let mut other = genesis(&m);
    let (oc, osigs) = other.changes_since(&[]);
    let err = a.ingest(oc, &osigs, &Toy).unwrap_err();
    assert!(
        matches!(err, DocError::BadSignature { .. } | DocError::ForeignGenesis { .. }),
        "{err}"
    );
    // Missing signature.
    let err = a.ingest(changes, &BTreeMap::new(), &Toy).unwrap_err();
    assert!(matches!(err, DocError::MissingSignature { .. }), "{err}");
}

#[test]
fn sync_rejects_a_peer_sending_a_forged_change() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let mut b = load_copy(&mut a);
    let (raw, bad, sigs) = forged_takeover(&b, &m, a.id());
    b.doc = raw;
    b.sigs.insert(bad.hash(), sigs[&bad.hash()].clone());
    let err = sync_pair(&mut a, &mut b).unwrap_err();
    assert!(matches!(err, DocError::Unauthorised { .. }), "{err}");
    assert_eq!(a.len(), 1);
}

#[test]
fn damaged_and_newer_files_get_clear_errors() {
    let o = signer(1);
    let mut a = genesis(&o);
    let bytes = a.save("toy");
    let err = SignedDoc::load(&bytes[..bytes.len() / 2], "toy").unwrap_err();
    assert!(err.to_string().contains("not a kith document"), "{err}");
    let err = SignedDoc::load(&bytes, "pool").unwrap_err();
    assert!(err.to_string().contains("expected pool"), "{err}");
    let mut newer = bytes.clone();
    // An array of 7 fields; the version comes first.
    assert_eq!(&newer[..2], &[0x87, 0x02]);
    newer[1] = 0x03;
    let err = SignedDoc::load(&newer, "toy").unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn a_change_over_the_size_limit_is_refused_locally_and_from_peers() {
    let o = signer(1);
    let mut a = genesis(&o);
    let before = a.heads();
    // Incompressible bytes, so the change cannot shrink below the limit.
    let big: Vec<u8> = (0..MAX_CHANGE_BYTES as u32 + 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = a.change(&o, 2, &Toy, |d| d.put(ROOT, "blob", big.clone())).unwrap_err();
    assert!(matches!(err, DocError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("at most 65536"), "{err}");
    assert_eq!(a.heads(), before);
    assert!(a.doc().get(ROOT, "blob").unwrap().is_none(), "the refused change was undone");
    // A change its author may not make is undone the same way, and the document goes on.
    let m = signer(2);
    let err = a.change(&m, 3, &Toy, |d| d.put(ROOT, "owner", m.author().key.to_vec())).unwrap_err();
    assert!(matches!(err, DocError::Unauthorised { .. }), "{err}");
    assert_eq!(a.heads(), before);
    // The same change made behind the library's back, correctly signed by the owner.
    let mut raw = a.doc.clone().with_actor(o.actor());
    raw.put(ROOT, "blob", big).unwrap();
    let h = raw.commit().unwrap();
    let change = raw.get_change_by_hash(&h).unwrap();
    let mut sigs = BTreeMap::new();
    sigs.insert(h, o.sign(&signed::signing_message(a.id(), &h)));
    let err = a.ingest(vec![change], &sigs, &Toy).unwrap_err();
    assert!(matches!(err, DocError::TooLarge { .. }), "{err}");
    assert_eq!(a.heads(), before);
    own_entry(&mut a, &o, 1);
    assert_eq!(a.len(), 2);
}

#[test]
fn a_signed_change_writing_into_an_object_that_does_not_exist_is_refused() {
    use automerge::ScalarValue;
    use automerge::legacy::{Key as LKey, ObjectId, Op, OpId, OpType};
    let o = signer(1);
    let mut a = genesis(&o);
    let before = a.heads();
    let len = a.len();
    let actor = o.actor();
    // The owner's own key, a valid signature, deps on the current heads: only the object the
    // op names (op 99 of this actor) was never made.
    let expanded = automerge::ExpandedChange {
        operations: vec![Op {
            action: OpType::Put(ScalarValue::Int(1)),
            obj: ObjectId::Id(OpId(99, actor.clone())),
            key: LKey::Map("x".into()),
            pred: Vec::new().into(),
            insert: false,
        }],
        actor_id: actor,
        hash: None,
        seq: 2,
        start_op: std::num::NonZeroU64::new(100).unwrap(),
        time: 0,
        message: None,
        deps: before.clone(),
        extra_bytes: Vec::new(),
        author: None,
    };
    let change = automerge::Change::from(expanded);
    let h = change.hash();
    let mut sigs = BTreeMap::new();
    sigs.insert(h, o.sign(&signed::signing_message(a.id(), &h)));
    let err = a.ingest(vec![change], &sigs, &Toy).unwrap_err();
    assert!(!err.to_string().is_empty());
    assert_eq!(a.heads(), before, "nothing applied");
    assert_eq!(a.len(), len);
    // The document still takes a valid change afterwards.
    own_entry(&mut a, &o, 7);
    assert_eq!(a.len(), len + 1);
}

#[test]
fn concurrent_changes_are_judged_at_their_own_dependencies() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let mut b = load_copy(&mut a);
    // The owner writes in a; meanwhile m writes its own entry in b, not having seen it.
    own_entry(&mut a, &o, 5);
    own_entry(&mut b, &m, 7);
    let (changes, sigs) = b.changes_since(&[]);
    let new = a.ingest(changes, &sigs, &Toy).expect("a concurrent allowed change");
    assert_eq!(new.len(), 1);
    let own = a.doc().get(ROOT, "own").unwrap().unwrap().1;
    assert_eq!(a.doc().keys(&own).count(), 2, "both entries");
    // A forbidden change made concurrently (on b's older heads) is judged at those heads and
    // refused, though a holds changes it did not see.
    let (_, bad, sigs) = forged_takeover(&b, &m, a.id());
    let before = a.heads();
    let err = a.ingest(vec![bad], &sigs, &Toy).unwrap_err();
    assert!(matches!(err, DocError::Unauthorised { .. }), "{err}");
    assert_eq!(a.heads(), before);
    // A concurrent change writing the owner's key inside its own entry is allowed; one
    // writing into another member's entry is not, whatever a holds now.
    let mut c = load_copy(&mut b);
    let key = hex(&o.author().key);
    let r = c.change(&m, 9, &Toy, |d| {
        let own = d.get(ROOT, "own")?.unwrap().1;
        d.put(&own, &key, 1)
    });
    assert!(matches!(r, Err(DocError::Unauthorised { .. })), "{r:?}");
}

#[test]
fn a_copy_checked_apart_is_adopted_whole_or_its_changes_applied() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let mut b = load_copy(&mut a);
    own_entry(&mut b, &m, 3);
    let (changes, sigs) = b.changes_since(&[]);
    // Nothing changed meanwhile: the copy is swapped in.
    let heads = a.heads();
    let mut work = a.fork();
    work.ingest(changes.clone(), &sigs, &Toy).unwrap();
    assert_eq!(a.adopt(work, &heads).unwrap().len(), 1);
    assert_eq!(a.len(), 2);
    // A local change meanwhile: the copy's new changes are applied, with their signatures,
    // and the document goes on syncing.
    let mut y = genesis(&o);
    let heads = y.heads();
    let mut work = y.fork();
    work.ingest(changes, &sigs, &Toy).unwrap();
    own_entry(&mut y, &o, 1);
    assert_eq!(y.adopt(work, &heads).unwrap().len(), 1);
    assert_eq!(y.len(), 3);
    let mut z = load_copy(&mut y);
    assert_eq!(z.len(), 3, "every change kept its signature through save and load");
    sync_pair(&mut z, &mut a).unwrap();
    assert_eq!(a.len(), 3);
}

#[test]
fn an_edit_that_fails_half_way_leaves_nothing_behind() {
    let o = signer(1);
    let mut a = genesis(&o);
    let before = a.heads();
    let err = a
        .change(&o, 2, &Toy, |d| {
            d.put(ROOT, "half", 1)?;
            Err::<(), _>(automerge::AutomergeError::InvalidIndex(7))
        })
        .unwrap_err();
    assert!(matches!(err, DocError::Automerge(_)), "{err}");
    assert_eq!(a.heads(), before);
    assert!(a.doc().get(ROOT, "half").unwrap().is_none());
    own_entry(&mut a, &o, 4);
    assert_eq!(a.len(), 2);
}

#[test]
fn a_change_that_changes_nothing_is_refused() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let mut raw = a.doc.clone().with_actor(m.actor());
    let h = raw.empty_change(automerge::transaction::CommitOptions::default());
    let change = raw.get_change_by_hash(&h).unwrap();
    let mut sigs = BTreeMap::new();
    sigs.insert(h, m.sign(&signed::signing_message(a.id(), &h)));
    let before = a.heads();
    let err = a.ingest(vec![change], &sigs, &Toy).unwrap_err();
    assert!(err.to_string().contains("changes nothing"), "{err}");
    assert_eq!(a.heads(), before);
}

#[test]
fn an_edit_that_panics_leaves_the_document_as_it_was() {
    let o = signer(1);
    let mut a = genesis(&o);
    let before = a.heads();
    let err = a
        .change(&o, 2, &Toy, |d| -> Result<(), automerge::AutomergeError> {
            d.put(ROOT, "half", 1)?;
            panic!("a bug in an edit");
        })
        .unwrap_err();
    assert!(matches!(err, DocError::Internal(_)), "{err}");
    assert_eq!(a.heads(), before);
    assert!(a.doc().get(ROOT, "owner").unwrap().is_some(), "the document is still there");
    own_entry(&mut a, &o, 4);
    assert_eq!(a.len(), 2);
}

/// A change writing into a map that only a change concurrent with it made: nodes that have the
/// other change would take it, nodes that do not could not, and the two would never sync again.
/// Refused everywhere.
#[test]
fn a_change_writing_into_a_map_its_dependencies_do_not_hold_is_refused() {
    use automerge::legacy::{Key as OpKey, ObjectId, OpId};
    struct Anyone;
    impl Authorizer for Anyone {
        fn authorise(&self, _: &Check<'_>) -> Result<(), String> {
            Ok(())
        }
    }
    let (ada, bob) = (signer(1), signer(2));
    let mut base = genesis(&ada);
    let mut with_map = load_copy(&mut base);
    let made = with_map
        .change(&ada, 2, &Anyone, |d| {
            let own = d.get(ROOT, "own")?.unwrap().1;
            d.put_object(&own, "x", ObjType::Map)
        })
        .unwrap()
        .0;
    let made = made.to_string();
    let (ctr, _) = made.split_once('@').unwrap();
    // Bob's change, made on the base (which has no map), then pointed into ada's new map.
    let mut raw = base.doc().clone().with_actor(bob.actor());
    let own = raw.get(ROOT, "own").unwrap().unwrap().1;
    raw.put(&own, "y", 1).unwrap();
    let h = raw.commit().unwrap();
    let mut x = raw.get_change_by_hash(&h).unwrap().decode();
    x.operations[0].obj = ObjectId::Id(OpId(ctr.parse().unwrap(), ada.actor()));
    x.operations[0].key = OpKey::Map("y".into());
    x.hash = None;
    let forged = automerge::Change::from(x);
    let h = forged.hash();
    let msg = [SIGNING_CONTEXT, &base.id()[..], &h.0[..]].concat();
    let sigs = BTreeMap::from([(h, bob.sign(&msg))]);
    let before = with_map.heads();
    let err = with_map.ingest(vec![forged.clone()], &sigs, &Anyone).unwrap_err();
    assert!(err.to_string().contains("its dependencies do not hold"), "{err}");
    assert_eq!(with_map.heads(), before);
    // The node without the map cannot take it either.
    assert!(base.ingest(vec![forged], &sigs, &Anyone).is_err());
}

/// Records which key signed each change it is shown.
struct Witness(std::sync::Mutex<Vec<SignedBy>>);

impl Authorizer for Witness {
    fn authorise(&self, c: &Check<'_>) -> Result<(), String> {
        self.0.lock().unwrap().push(c.signed_by);
        Toy.authorise(c)
    }
}

#[test]
fn a_device_signs_with_its_own_certified_key_and_only_as_itself() {
    let owner = signer(1);
    let mut a = genesis(&owner);
    // A device of identity 2 that does not hold the identity secret: its key, the identity's
    // certificate and nothing else.
    let root2 = Signer::with_device(&[2; 32], &[21; 32]);
    let device = root2.author().device;
    let cert = root2.certify(&device).unwrap();
    let phone = Signer::device_only(root2.author().key, &[21; 32], cert, BTreeMap::new());
    assert!(!phone.has_root());
    assert_eq!(phone.author(), root2.author());
    let mut b = load_copy(&mut a);
    own_entry(&mut b, &phone, 7);
    let (changes, sigs) = b.changes_since(&a.heads());
    assert_eq!(sigs.values().next().unwrap().len(), DEVICE_SIG_LEN);
    let seen = Witness(Default::default());
    a.ingest(changes.clone(), &sigs, &seen).unwrap();
    assert_eq!(*seen.0.lock().unwrap(), vec![SignedBy::Device(device)]);
    // Saved and loaded, the device's signature verifies again.
    assert_eq!(load_copy(&mut a).len(), 2);

    // The same change claimed by another device of the identity: the signature names the
    // device that made it, so the claim is refused.
    let mut c = load_copy(&mut genesis(&owner));
    let other = Author { key: root2.author().key, device: [99; 32] };
    let mut raw = c.doc.clone().with_actor(other.actor());
    let own = raw.get(ROOT, "own").unwrap().unwrap().1;
    raw.put(&own, hex(&other.key), 8).unwrap();
    let h = raw.commit().unwrap();
    let forged = raw.get_change_by_hash(&h).unwrap();
    let sigs = BTreeMap::from([(h, phone.sign(&signed::signing_message(c.id(), &h)))]);
    let err = c.ingest(vec![forged], &sigs, &Toy).unwrap_err();
    assert!(matches!(err, DocError::BadSignature { .. }), "{err}");

    // A device key certified by another identity does not sign for this one.
    let stranger = Signer::with_device(&[3; 32], &[21; 32]);
    let mut raw = c.doc.clone().with_actor(root2.actor());
    let own = raw.get(ROOT, "own").unwrap().unwrap().1;
    raw.put(&own, hex(&root2.author().key), 9).unwrap();
    let h = raw.commit().unwrap();
    let change = raw.get_change_by_hash(&h).unwrap();
    let mut s2 = stranger.sign(&signed::signing_message(c.id(), &h));
    s2[32..96].copy_from_slice(&stranger.certify(&device).unwrap());
    let err = c.ingest(vec![change], &BTreeMap::from([(h, s2)]), &Toy).unwrap_err();
    assert!(matches!(err, DocError::BadSignature { .. }), "{err}");
    // Truncated and overlong signatures are refused, not read past.
    for len in [0, 63, 65, 159, 161] {
        assert!(!verify(&root2.author().key, b"m", &vec![0u8; len]));
    }
    assert_eq!(c.len(), 1);
}

#[test]
fn a_file_keeps_each_devices_certificate_once_and_old_files_still_load() {
    // Version 2 stores a device's key and certificate once, not with every change.
    let o = signer(1);
    let mut a = genesis(&o);
    let phone = Signer::with_device(&[2; 32], &[21; 32]);
    for v in 0..50 {
        own_entry(&mut a, &phone, v);
    }
    let bytes = a.save("toy");
    let mut back = SignedDoc::load(&bytes, "toy").unwrap();
    assert_eq!(back.len(), a.len());
    assert_eq!(back.heads(), a.heads());
    // A version 1 file (every signature whole) reads the same.
    #[derive(minicbor::Encode)]
    struct V1 {
        #[n(0)]
        version: u32,
        #[n(1)]
        kind: String,
        #[cbor(n(2), with = "minicbor::bytes")]
        id: [u8; 32],
        #[cbor(n(3), with = "minicbor::bytes")]
        doc: Vec<u8>,
        #[n(4)]
        sigs: Vec<SigEntry>,
    }
    let v1 = V1 {
        version: 1,
        kind: "toy".into(),
        id: *a.id(),
        doc: a.doc.save(),
        sigs: a.sigs.iter().map(|(h, s)| SigEntry { hash: h.0, sig: s.clone() }).collect(),
    };
    let v1 = minicbor::to_vec(&v1).unwrap();
    assert!(bytes.len() + 45 * 96 < v1.len(), "{} bytes against {}", bytes.len(), v1.len());
    let mut old = SignedDoc::load(&v1, "toy").unwrap();
    assert_eq!(old.heads(), a.heads());
    // A certificate index past the table is refused, not read past.
    let mut broken = bytes.clone();
    let at = broken.len() - 1;
    broken[at] = 0x17; // the last entry's index: 23, beyond the one certificate
    assert!(SignedDoc::load(&broken, "toy").is_err());
}

/// A device whose home was put back to an older copy (a backup, a snapshot, a crash before
/// the save) writes again from that copy: its new changes must not reuse the operation ids of
/// the ones its peers already hold, or every peer refuses them and the device never catches
/// up (found by `testnet chaos --minutes 3 --seed 1`).
#[test]
fn a_device_restarted_from_an_old_copy_of_its_document_still_syncs_both_ways() {
    let o = signer(1);
    let mut a = genesis(&o);
    let mut b = load_copy(&mut a);
    own_entry(&mut a, &o, 1);
    let mut old = load_copy(&mut a);
    // Written after the copy was taken, and passed on before the device went down.
    own_entry(&mut a, &o, 2);
    sync_pair(&mut a, &mut b).unwrap();
    drop(a);
    // The same device, started again (a new signer for the same keys) from the old copy.
    let again = signer(1);
    assert_eq!(again.author(), o.author());
    assert_ne!(again.actor(), o.actor(), "each signer writes under an actor of its own");
    let m = signer(2);
    own_entry(&mut old, &again, 3);
    own_entry(&mut old, &again, 4);
    own_entry(&mut b, &m, 5);
    sync_pair(&mut old, &mut b).unwrap();
    assert_eq!(old.heads(), b.heads());
    assert_eq!(old.len(), 6);
    let own = |d: &SignedDoc, s: &Signer| {
        let obj = d.doc().get(ROOT, "own").unwrap().unwrap().1;
        d.doc().get(&obj, hex(&s.author().key)).unwrap().unwrap().0.as_i64()
    };
    // The last write by the device wins over the one lost with its home.
    assert_eq!(own(&old, &o), own(&b, &o));
    assert_eq!(own(&b, &m), Some(5));
    // Both halves of its history are signed by the same author, and a reload keeps them.
    let mut c = load_copy(&mut old);
    assert_eq!(c.heads(), b.heads());
}

#[test]
fn an_actor_names_its_author_with_or_without_an_incarnation() {
    let s = signer(3);
    assert_eq!(Author::from_actor(&s.actor()), Some(s.author()));
    assert_eq!(Author::from_actor(&s.author().actor()), Some(s.author()));
    let mut long = s.actor().to_bytes().to_vec();
    long.push(0);
    assert_eq!(Author::from_actor(&automerge::ActorId::from(long)), None);
    assert_eq!(Author::from_actor(&automerge::ActorId::from(vec![1u8; 63])), None);
}

/// A peer keeps its sync state for a device across sessions; when that device comes back from
/// an older copy of its document, the peer must still send the signature of every change it
/// sends, not only of those after the heads it believed they shared (found by `testnet chaos
/// --minutes 3 --seed 1`: node 5 refused every peer's changes as "arrived without a
/// signature" and never caught up).
#[test]
fn a_peer_that_lost_changes_gets_them_back_signed_from_a_peer_that_remembers_it() {
    let (o, m) = (signer(1), signer(2));
    let mut a = genesis(&o);
    let mut b = load_copy(&mut a);
    let old = load_copy(&mut b);
    own_entry(&mut a, &o, 1);
    own_entry(&mut a, &o, 2);
    // A long-lived state on a's side for b, and a session that brings b up to date.
    let mut sa = SyncState::new();
    let mut sb = SyncState::new();
    for _ in 0..10 {
        if let Some(f) = a.sync_out(&mut sa) {
            b.sync_in(&mut sb, &f, &Toy).unwrap();
        }
        if let Some(f) = b.sync_out(&mut sb) {
            a.sync_in(&mut sa, &f, &Toy).unwrap();
        }
    }
    assert_eq!(a.heads(), b.heads());
    // b is put back to its old copy (with a fresh state: it remembers nothing) and writes.
    let mut b = old;
    own_entry(&mut b, &m, 3);
    let mut sb = SyncState::new();
    let mut done = false;
    for _ in 0..10 {
        let fa = a.sync_out(&mut sa);
        if let Some(f) = &fa {
            b.sync_in(&mut sb, f, &Toy).unwrap();
        }
        let fb = b.sync_out(&mut sb);
        if let Some(f) = &fb {
            a.sync_in(&mut sa, f, &Toy).unwrap();
        }
        if fa.is_none() && fb.is_none() {
            done = true;
            break;
        }
    }
    assert!(done, "sync did not finish");
    assert_eq!(a.heads(), b.heads());
    assert_eq!(b.len(), 4);
}
