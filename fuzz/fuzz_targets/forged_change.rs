//! A change shaped like automerge's own, forged field by field from the input (its start, and
//! each operation's object, key, replaced values and action), signed by a member and judged as
//! a peer's change: it is refused, or what is kept saves and loads again. (automerge trusts a
//! change's operations; two forgeries found by hand, reused operation ids and replaced values
//! of another member's, hung a node and left documents that would not load.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::num::NonZeroU64;
use std::sync::OnceLock;

use kith_crdt::automerge::legacy::{Key as OpKey, ObjectId, OpId, OpType};
use kith_crdt::automerge::transaction::Transactable;
use kith_crdt::automerge::{ActorId, Change, ObjType, ROOT, ReadDoc, ScalarValue};
use kith_crdt::{Authorizer, Check, SIGNING_CONTEXT, SignedDoc, Signer};

struct Anyone;

impl Authorizer for Anyone {
    fn authorise(&self, _: &Check<'_>) -> Result<(), String> {
        Ok(())
    }
}

struct Setup {
    doc: Vec<u8>,
    template: Change,
    actors: [ActorId; 2],
    bob: Signer,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        // automerge panics on some forgeries, and kith catches those panics and refuses the
        // change; libfuzzer's hook would abort on them first. A panic kith does not catch still
        // ends the run (libfuzzer-sys aborts when one leaves the target).
        std::panic::set_hook(Box::new(|i| if std::env::var("KITH_FUZZ_DEBUG").is_ok() { eprintln!("PANIC {i}") }));
        let ada = Signer::new(&[1; 32], [2; 32]);
        let bob = Signer::new(&[3; 32], [4; 32]);
        let mut d = SignedDoc::create(&ada, 1, &Anyone, |d| {
            let m = d.put_object(ROOT, "members", ObjType::Map)?;
            let e = d.put_object(&m, "ada", ObjType::Map)?;
            d.put(&e, "n", 1)?;
            d.put(ROOT, "name", "street")
        })
        .expect("a document");
        d.change(&bob, 2, &Anyone, |d| {
            let m = d.get(ROOT, "members")?.expect("members").1;
            let e = d.put_object(&m, "bob", ObjType::Map)?;
            d.put(&e, "n", 1)
        })
        .expect("bob's entry");
        let doc = d.save("fuzz");
        let heads = d.heads();
        d.change(&bob, 3, &Anyone, |d| {
            let m = d.get(ROOT, "members")?.expect("members").1;
            let e = d.get(&m, "bob")?.expect("bob").1;
            d.put(&e, "n", 2)?;
            let o = d.put_object(&e, "o", ObjType::Map)?;
            d.put(&o, "k", "v")?;
            d.delete(&e, "n")
        })
        .expect("the template");
        let template = d.changes_since(&heads).0.remove(0);
        let actors = [ada.actor(), bob.actor()];
        Setup { doc, template, actors, bob }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let mut x = s.template.decode();
    let mut bytes = data.iter().copied();
    let mut next = move || u64::from(bytes.next().unwrap_or(0));
    let shift = (next() as i64) - 128;
    x.start_op = NonZeroU64::new((x.start_op.get() as i64 + shift / 16).max(1) as u64)
        .expect("at least 1");
    for op in &mut x.operations {
        let actor = |n: u64| s.actors[(n % 2) as usize].clone();
        match next() % 4 {
            1 => op.obj = ObjectId::Root,
            2 => op.obj = ObjectId::Id(OpId(next() % 12 + 1, actor(next()))),
            _ => {}
        }
        match next() % 4 {
            1 => op.pred = vec![OpId(next() % 12 + 1, actor(next()))].into(),
            2 => op.pred = Vec::new().into(),
            _ => {}
        }
        if next() % 3 == 1 {
            let keys = ["n", "o", "k", "members", "ada", "bob", "name"];
            op.key = OpKey::Map(keys[(next() % 7) as usize].into());
        }
        match next() % 6 {
            1 => op.action = OpType::Delete,
            2 => op.action = OpType::Make(ObjType::Map),
            3 => op.action = OpType::Put(ScalarValue::Int(7)),
            _ => {}
        }
    }
    x.hash = None;
    if std::env::var("KITH_FUZZ_DEBUG").is_ok() {
        for op in &x.operations { eprintln!("OP {:?} {:?} {:?} pred {:?} insert {}", op.action, op.obj, op.key, op.pred, op.insert); }
        eprintln!("START {} TEMPLATE {}", x.start_op, s.template.start_op());
    }
    // automerge's own encoder may refuse a shape no peer could send as bytes either.
    let Ok(change) = std::panic::catch_unwind(move || Change::from(x)) else { return };
    let mut d = SignedDoc::load(&s.doc, "fuzz").expect("the saved document");
    let h = change.hash();
    let msg = [SIGNING_CONTEXT, &d.id()[..], &h.0[..]].concat();
    let sigs = [(h, s.bob.sign(&msg))].into_iter().collect();
    if d.ingest(vec![change], &sigs, &Anyone).is_ok() {
        let saved = d.save("fuzz");
        let again = SignedDoc::load(&saved, "fuzz")
            .expect("a document with a change kith accepted loads again");
        let _ = again.doc().get(ROOT, "name");
    }
});
