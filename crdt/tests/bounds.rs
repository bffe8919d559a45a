//! Bytes from a peer cannot make a node allocate what they would inflate to: compressed
//! changes and document columns that expand to a GiB are refused, and the allocator counts
//! what refusing them cost.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use kith_crdt::automerge::ROOT;
use kith_crdt::automerge::sync::{ChunkList, Message, MessageVersion};
use kith_crdt::automerge::transaction::Transactable;
use kith_crdt::{Authorizer, Check, DocError, SignedDoc, Signer, SyncFrame, SyncState};

/// The system allocator, counting bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the most it allocated beyond what was in use before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = IN_USE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}

struct Anyone;

impl Authorizer for Anyone {
    fn authorise(&self, _: &Check<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// DEFLATE of `len` zero bytes, compressed as well as DEFLATE can (about 1 KiB per MiB).
fn deflated_zeros(len: usize) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() {
        e.write_all(&block).unwrap();
    }
    e.finish().unwrap()
}

fn uleb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An automerge chunk of `kind` around `data` (the checksum is left for automerge to refuse).
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut c = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    uleb(data.len() as u64, &mut c);
    c.extend_from_slice(data);
    c
}

/// A change chunk around `body` with the checksum automerge expects (SHA-256 of type, length
/// and body), so only the checks before automerge can refuse it.
fn signed_off_change(body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut header = vec![1u8];
    uleb(body.len() as u64, &mut header);
    let sum = sha2::Sha256::new().chain_update(&header).chain_update(body).finalize();
    let mut c = vec![0x85, 0x6f, 0x4a, 0x83];
    c.extend_from_slice(&sum[..4]);
    c.extend_from_slice(&header);
    c.extend_from_slice(body);
    c
}

fn sleb(v: i64, out: &mut Vec<u8>) {
    let mut v = v;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0);
        if done {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A sync message that carries `chunks` as its changes.
fn frame(chunks: Vec<Vec<u8>>) -> SyncFrame {
    let msg = Message {
        heads: vec![],
        need: vec![],
        have: vec![],
        changes: ChunkList::from(chunks),
        flags: None,
        version: MessageVersion::V1,
    };
    SyncFrame { msg: msg.encode(), sigs: vec![] }
}

fn doc() -> SignedDoc {
    let s = Signer::new(&[1; 32], [2; 32]);
    SignedDoc::create(&s, 1, &Anyone, |d| d.put(ROOT, "name", "street").map(|_| ())).unwrap()
}

const GIB: usize = 1 << 30;
const ALLOWED: usize = 64 << 20;

#[test]
fn a_compressed_change_that_inflates_to_a_gib_is_refused_without_allocating_it() {
    let bomb = chunk(2, &deflated_zeros(GIB));
    assert!(bomb.len() < 2 << 20, "{} bytes on the wire", bomb.len());
    let mut d = doc();
    let before = d.len();
    let f = frame(vec![bomb]);
    let (r, peak) = peak_of(|| d.sync_in(&mut SyncState::new(), &f, &Anyone));
    match r {
        Err(DocError::Expands { .. }) => {}
        other => panic!("expected a refusal for expanding, got {other:?}"),
    }
    assert!(peak < ALLOWED, "refusing it allocated {} MiB", peak >> 20);
    assert_eq!(d.len(), before, "nothing was applied");
}

#[test]
fn a_document_whose_column_inflates_to_a_gib_is_refused_without_allocating_it() {
    // No actors, no heads, one deflated change column holding the bomb, no op columns.
    let col = deflated_zeros(GIB);
    let mut data = vec![0, 0, 1];
    uleb((1 << 4) | 0b1000, &mut data);
    uleb(col.len() as u64, &mut data);
    data.push(0);
    data.extend_from_slice(&col);
    let bomb = chunk(0, &data);
    let mut d = doc();
    let f = frame(vec![bomb]);
    let (r, peak) = peak_of(|| d.sync_in(&mut SyncState::new(), &f, &Anyone));
    assert!(matches!(r, Err(DocError::Expands { .. })), "{r:?}");
    assert!(peak < ALLOWED, "refusing it allocated {} MiB", peak >> 20);
}

#[test]
fn broken_framing_and_unknown_chunk_types_are_refused_by_name() {
    let mut d = doc();
    for (chunks, says) in [
        (vec![b"not automerge at all".to_vec()], "magic"),
        (vec![chunk(3, b"a bundle")], "chunk type 3"),
        (vec![chunk(1, b"abc")[..11].to_vec()], "truncated"),
        (vec![chunk(1, &vec![0u8; (64 << 10) + 1])], "expands past"),
    ] {
        let e = d.sync_in(&mut SyncState::new(), &frame(chunks), &Anyone).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    // The document still takes a peer's valid changes afterwards.
    let mut peer = SignedDoc::empty(*d.id());
    let (mut a, mut b) = (SyncState::new(), SyncState::new());
    for _ in 0..10 {
        if let Some(f) = d.sync_out(&mut a) {
            peer.sync_in(&mut b, &f, &Anyone).unwrap();
        }
        if let Some(f) = peer.sync_out(&mut b) {
            d.sync_in(&mut a, &f, &Anyone).unwrap();
        }
    }
    assert_eq!(peer.len(), d.len());
}

#[test]
fn a_tiny_change_declaring_a_billion_operations_is_refused_unwalked() {
    // No dependencies, a 64-byte actor, seq 1, start op 1, time 0, no message, no other actors,
    // one column: actions (id 4, integer).
    let mut header = vec![0];
    uleb(64, &mut header);
    header.extend_from_slice(&[7; 64]);
    header.extend_from_slice(&[1, 1, 0, 0, 0]);
    let change = |col: &[u8]| {
        let mut body = header.clone();
        uleb(1, &mut body);
        uleb((4 << 4) | 2, &mut body);
        uleb(col.len() as u64, &mut body);
        body.extend_from_slice(col);
        signed_off_change(&body)
    };
    // One run of a billion `put`s, in 6 bytes.
    let mut col = Vec::new();
    sleb(1_000_000_000, &mut col);
    uleb(1, &mut col);
    let bomb = change(&col);
    assert!(bomb.len() < 120, "{} bytes", bomb.len());
    let mut d = doc();
    let before = d.len();
    let (r, peak) = peak_of(|| d.sync_in(&mut SyncState::new(), &frame(vec![bomb]), &Anyone));
    match r {
        Err(DocError::Expands { what, .. }) => assert!(what.contains("entries"), "{what}"),
        other => panic!("expected a refusal for its entries, got {other:?}"),
    }
    assert!(peak < ALLOWED, "refusing it allocated {} MiB", peak >> 20);
    assert_eq!(d.len(), before);
    // A literal run that claims more values than the column holds: refused as truncated.
    let mut col = Vec::new();
    sleb(-1000, &mut col);
    uleb(1, &mut col);
    let r = d.sync_in(&mut SyncState::new(), &frame(vec![change(&col)]), &Anyone);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    // A null run of a billion, and a boolean column of a billion: refused as well.
    let mut col = vec![0];
    uleb(1_000_000_000, &mut col);
    let e = d.sync_in(&mut SyncState::new(), &frame(vec![change(&col)]), &Anyone).unwrap_err();
    assert!(matches!(e, DocError::Expands { .. }), "{e}");
    assert_eq!(d.len(), before);
}
