//! A peer's sync turn for a document: the frame as sent, or an automerge message in a frame
//! with no signatures.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use kith_crdt::{Authorizer, Check, SignedDoc, Signer, SyncFrame, SyncState};

struct Anyone;

impl Authorizer for Anyone {
    fn authorise(&self, _: &Check<'_>) -> Result<(), String> {
        Ok(())
    }
}

fn doc() -> &'static Vec<u8> {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        let s = Signer::new(&[1; 32], [2; 32]);
        let mut d = SignedDoc::create(&s, 1, &Anyone, |d| {
            use kith_crdt::automerge::transaction::Transactable;
            d.put(kith_crdt::automerge::ROOT, "name", "street").map(|_| ())
        })
        .expect("a document");
        d.save("fuzz")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let frame = if mode & 1 == 0 {
        match minicbor::decode::<SyncFrame>(rest) {
            Ok(f) => f,
            Err(_) => return,
        }
    } else {
        SyncFrame { msg: rest.to_vec(), sigs: Vec::new() }
    };
    let mut d = SignedDoc::load(doc(), "fuzz").expect("the saved document");
    let _ = d.sync_in(&mut SyncState::new(), &frame, &Anyone);
});
