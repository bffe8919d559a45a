//! Committed fixtures of every persisted format, decoded by this build. If a change breaks
//! one of these, a newer kith could no longer read what an older one wrote.
//!
//! `KITH_WRITE_FIXTURES=1 cargo test -p kith-node --test formats -- --ignored` rewrites them
//! (only ever for a new format version, next to the old files, never over them).

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};

use kith_node::keys::{Identity, NodeKey};
use kith_node::store::chunker::{CHUNKER_NAME, Cutter, DATA_CHUNKS, TREE_CHUNKS};
use kith_node::store::envelope::{self, Compression, Sealer, StoreKeys};
use kith_node::store::pack::{self, BlobKind, PackWriter};
use kith_node::store::root::{EntryKind, ROOT_VERSION, Root};
use kith_node::store::tree::{
    ChangeKey, ChunkRef, Item, Meta, TREE_VERSION, TreeReader, TreeStats, TreeWriter,
};
use kith_node::{ChunkId, ObjectId};

const PASSPHRASE: &str = "kith fixture passphrase";
const LINE: &[u8] = b"hello from the kith format fixture\n";

fn dir() -> PathBuf {
    // The crate's folder as the test runner gives it, else as it was when the test was built
    // (a shared target folder may hold a binary built from another clone of the repository).
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    root.join("tests/fixtures")
}

fn content() -> Vec<u8> {
    LINE.repeat(100)
}

#[test]
fn key_files_v1_decode() {
    let id =
        Identity::from_file_bytes(&std::fs::read(dir().join("identity-v1.key")).unwrap()).unwrap();
    let expected = std::fs::read_to_string(dir().join("identity-v1.id")).unwrap();
    assert_eq!(id.id().to_string(), expected.trim());
    let node =
        NodeKey::from_file_bytes(&std::fs::read(dir().join("node-v1.key")).unwrap()).unwrap();
    let expected = std::fs::read_to_string(dir().join("node-v1.id")).unwrap();
    assert_eq!(node.id().to_string(), expected.trim());
}

#[test]
fn identity_export_v1_decodes_with_its_passphrase() {
    let export = std::fs::read(dir().join("identity-v1.export.age")).unwrap();
    let id = Identity::import(&export, PASSPHRASE).unwrap();
    let expected = std::fs::read_to_string(dir().join("identity-v1.id")).unwrap();
    assert_eq!(id.id().to_string(), expected.trim());
}

/// The pack holds a data chunk, a tree chunk and an object root, as a put writes them.
#[test]
fn pack_envelope_tree_and_root_v1_decode() {
    let id =
        Identity::from_file_bytes(&std::fs::read(dir().join("identity-v1.key")).unwrap()).unwrap();
    let keys = StoreKeys::derive(id.store_secret());
    let path = dir().join("pack-v1.pack");
    let trailer = pack::read_trailer(&path).unwrap();
    let file = File::open(&path).unwrap();
    let blob = |want: &[u8; 32]| -> Vec<u8> {
        let (e, off) = trailer.iter().find(|(e, _)| &e.id == want).unwrap();
        let bytes = pack::read_at(&file, *off, e.len).unwrap();
        assert_eq!(ChunkId::of(&bytes).0, e.id, "blob bytes match their id");
        bytes
    };
    let (root_entry, _) = trailer.iter().find(|(e, _)| e.kind == BlobKind::Root as u8).unwrap();
    let object = ObjectId(root_entry.id);
    assert_eq!(
        object.to_string(),
        std::fs::read_to_string(dir().join("pack-v1.object")).unwrap().trim()
    );
    let root = Root::open(&blob(&root_entry.id), &[id.age_identity()]).unwrap();
    assert_eq!(root.version, 1);
    assert_eq!(root.entry_kind(), EntryKind::File);
    assert_eq!(root.source, b"/fixture/hello.txt");
    assert_eq!(root.chunker, "fastcdc-5.0.0-v2020");
    assert_eq!(root.stats, TreeStats { files: 1, dirs: 0, symlinks: 0, bytes: 3500 });

    let mut reader = TreeReader::new(root.tree.clone(), |r: &ChunkRef| {
        envelope::open(&keys, &blob(&r.id), &r.chunk_key(), r.len).map_err(|e| panic!("{e}"))
    });
    let mut items = Vec::new();
    while let Some(i) =
        reader.next_item().map_err(|e: kith_node::store::tree::TreeError| e).unwrap()
    {
        items.push(i);
    }
    let [
        Item::File { path, meta, .. },
        Item::Chunk(data),
        Item::FileEnd { size: 3500 },
        Item::End(_),
    ] = &items[..]
    else {
        panic!("unexpected items {items:?}")
    };
    assert!(path.is_empty());
    assert_eq!(meta.mode, 0o644);
    let sealed = blob(&data.id);
    assert_eq!(sealed[0], 1, "envelope version");
    assert_eq!(sealed[1], 1, "zstd codec");
    assert_eq!(envelope::open(&keys, &sealed, &data.chunk_key(), data.len).unwrap(), content());
}

#[test]
#[ignore = "writes fixtures; run by hand for a new format version"]
fn write_fixtures() {
    if std::env::var_os("KITH_WRITE_FIXTURES").is_none() {
        return;
    }
    let d = dir();
    let id = Identity::generate();
    std::fs::write(d.join("identity-v1.key"), id.to_file_bytes()).unwrap();
    std::fs::write(d.join("identity-v1.id"), format!("{}\n", id.id())).unwrap();
    std::fs::write(d.join("identity-v1.export.age"), id.export(PASSPHRASE).unwrap()).unwrap();
    let node = NodeKey::generate();
    std::fs::write(d.join("node-v1.key"), node.to_file_bytes()).unwrap();
    std::fs::write(d.join("node-v1.id"), format!("{}\n", node.id())).unwrap();

    let keys = StoreKeys::derive(id.store_secret());
    let mut sealer = Sealer::new();
    let data = content();
    let key = keys.chunk_key(&data);
    let (env, chunk_id) = sealer.seal(&key, &data, Compression::Try);
    let data_ref = ChunkRef { id: chunk_id.0, key: key.0, len: data.len() as u32 };
    let mut tree = TreeWriter::new(Cutter::new(TREE_CHUNKS, keys.cdc_seed()));
    let meta = Meta { mode: 0o644, mtime_s: 1_763_000_000, mtime_ns: 0, uid: 1000, gid: 1000 };
    let change =
        ChangeKey { size: 3500, mtime_ns: 1_763_000_000_000_000_000, ctime_ns: 0, ino: 1, dev: 1 };
    tree.push(&Item::File { path: vec![], meta, change });
    tree.push(&Item::Chunk(data_ref));
    tree.push(&Item::FileEnd { size: 3500 });
    let stats = TreeStats { files: 1, dirs: 0, symlinks: 0, bytes: 3500 };
    tree.push(&Item::End(stats));
    let tmp = tempfile::tempdir().unwrap();
    let mut w = PackWriter::create(tmp.path(), 1).unwrap();
    w.append(chunk_id, BlobKind::Chunk, &env).unwrap();
    let mut tree_refs = Vec::new();
    for plain in tree.finish() {
        let k = keys.chunk_key(&plain);
        let (e, i) = sealer.seal(&k, &plain, Compression::Try);
        w.append(i, BlobKind::Chunk, &e).unwrap();
        tree_refs.push(ChunkRef { id: i.0, key: k.0, len: plain.len() as u32 });
    }
    let root = Root {
        version: ROOT_VERSION,
        kind: EntryKind::File as u8,
        source: b"/fixture/hello.txt".to_vec(),
        created_ms: 1_763_000_000_000,
        parent: None,
        device: *node.id().as_bytes(),
        chunker: CHUNKER_NAME.into(),
        data_chunks: DATA_CHUNKS,
        tree_chunks: TREE_CHUNKS,
        tree_version: TREE_VERSION,
        tree: tree_refs,
        stats,
    };
    let sealed = root.seal(&id.recipient());
    let object = ObjectId::of(&sealed);
    w.append(object.into(), BlobKind::Root, &sealed).unwrap();
    let done = w.finish().unwrap();
    std::fs::copy(&done.tmp_path, d.join("pack-v1.pack")).unwrap();
    std::fs::write(d.join("pack-v1.object"), format!("{object}\n")).unwrap();
}
