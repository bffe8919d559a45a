//! Whoever holds the home without the key files learns neither contents nor names.

use std::fs;

use crate::util::*;

#[test]
fn the_store_holds_no_plaintext_and_no_names() {
    let k = Kith::new();
    let src = k.path("src");
    let phrase = b"the neighbours' recipe for sourdough bread is in the blue tin";
    let mut text = Vec::new();
    for _ in 0..2_000 {
        text.extend_from_slice(phrase);
    }
    // Incompressible bytes stay literal under compression; finding them would mean no
    // encryption.
    let raw = random_bytes(300_000, 77);
    write(&src.join("very-private-folder/kith-secret-filename-4711.txt"), &text);
    write(&src.join("very-private-folder/raw.bin"), &raw);
    k.put(&src);
    k.put(&src.join("very-private-folder/raw.bin"));

    let needles: Vec<&[u8]> = vec![
        &phrase[..32],
        &raw[150_000..150_064],
        b"kith-secret-filename-4711",
        b"very-private-folder",
        b"raw.bin",
    ];
    let files: Vec<_> = files_under(&k.home)
        .into_iter()
        .filter(|p| !p.ends_with("identity.key") && !p.ends_with("node.key"))
        .collect();
    assert!(files.iter().any(|p| p.extension().is_some_and(|e| e == "pack")), "no packs?");
    assert!(files.iter().any(|p| p.ends_with("index.redb")));
    for f in &files {
        let bytes = fs::read(f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == *n),
                "{} contains {:?}",
                f.display(),
                String::from_utf8_lossy(&n[..n.len().min(20)])
            );
        }
    }
}
