//! Object names belong to their owner. A pool document records each object a member stores
//! (placement, repair and quotas need its manifest, size and blob count), but its name is
//! sealed under a key only the owner's identity derives: holders and other members see that an
//! object exists and how large it is, never what it is called.
//!
//! Sealed name: `nonce (12 random bytes) || ChaCha20-Poly1305(key, nonce, aad = owner key ||
//! pool id || object id, name padded with zero bytes to a multiple of 32)`, key = BLAKE3 key
//! derivation over the identity secret ([`NAME_CONTEXT`]). Binding owner, pool and object means
//! a sealed name cannot be moved to another entry (not even by a member copying it onto its own
//! object); the padding hides a name's exact length.

use kith_crdt::{Key, Signer};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Key derivation context of the name key.
pub const NAME_CONTEXT: &str = "kith 2026-11 pool object names v1";

/// Longest name sealed (a file or folder name; longer ones are cut at a character boundary).
pub const MAX_NAME: usize = 255;

/// An object's name as the pool document holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectName {
    /// Sealed for its owner (what kith writes).
    Sealed(Vec<u8>),
    /// In clear: written by kith before names were sealed.
    Clear(String),
}

fn key(signer: &Signer, context: &str) -> LessSafeKey {
    let k = signer.derive_key(context);
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte key"))
}

/// Seals `plain` for `signer`'s identity under the key of `context`, bound to `aad`:
/// `nonce || ciphertext || tag`.
pub(crate) fn seal_bytes(signer: &Signer, context: &str, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("the system's random source");
    let mut body = plain.to_vec();
    key(signer, context)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .expect("sealing a short record");
    [&nonce[..], &body].concat()
}

/// Opens what [`seal_bytes`] sealed, if `signer` is of the same identity.
pub(crate) fn open_bytes(
    signer: &Signer,
    context: &str,
    aad: &[u8],
    sealed: &[u8],
) -> Option<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = sealed.get(..NONCE_LEN)?.try_into().ok()?;
    let mut body = sealed[NONCE_LEN..].to_vec();
    let plain = key(signer, context)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .ok()?;
    Some(plain.to_vec())
}

/// What a sealed name is bound to.
fn name_aad(signer: &Signer, pool: &Key, object: &Key) -> Vec<u8> {
    [&signer.author().key[..], pool, object].concat()
}

/// Seals `name` of `signer`'s `object` in `pool`.
pub fn seal(signer: &Signer, pool: &Key, object: &Key, name: &str) -> ObjectName {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut plain = name.as_bytes()[..end].to_vec();
    plain.resize(plain.len().div_ceil(32).max(1) * 32, 0);
    ObjectName::Sealed(seal_bytes(signer, NAME_CONTEXT, &name_aad(signer, pool, object), &plain))
}

impl ObjectName {
    /// The name, if `signer` is of the identity that sealed it for this pool and object (or
    /// it is in clear).
    pub fn open(&self, signer: &Signer, pool: &Key, object: &Key) -> Option<String> {
        match self {
            ObjectName::Clear(s) => Some(s.clone()),
            ObjectName::Sealed(b) => {
                let aad = name_aad(signer, pool, object);
                let mut plain = open_bytes(signer, NAME_CONTEXT, &aad, b)?;
                while plain.last() == Some(&0) {
                    plain.pop();
                }
                String::from_utf8(plain).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_reads_a_name_and_only_for_its_entry() {
        let (alice, alice_laptop, bob) = (
            Signer::new(&[1; 32], [10; 32]),
            Signer::new(&[1; 32], [11; 32]),
            Signer::new(&[2; 32], [20; 32]),
        );
        let (pool, other_pool) = ([5; 32], [6; 32]);
        let sealed = seal(&alice, &pool, &[7; 32], "taxes-2026.pdf");
        let ObjectName::Sealed(bytes) = &sealed else { panic!("sealed") };
        assert!(!bytes.windows(5).any(|w| w == b"taxes"), "no clear text");
        assert_eq!(bytes.len(), 12 + 32 + 16, "padded: the length says only 'under 33 bytes'");
        assert_eq!(sealed.open(&alice, &pool, &[7; 32]).as_deref(), Some("taxes-2026.pdf"));
        assert_eq!(sealed.open(&alice_laptop, &pool, &[7; 32]).as_deref(), Some("taxes-2026.pdf"));
        assert_eq!(sealed.open(&bob, &pool, &[7; 32]), None);
        assert_eq!(sealed.open(&alice, &pool, &[8; 32]), None, "moved to another object");
        assert_eq!(sealed.open(&alice, &other_pool, &[7; 32]), None, "moved to another pool");
        assert_ne!(seal(&alice, &pool, &[7; 32], "a"), seal(&alice, &pool, &[7; 32], "a"));
        let long = "é".repeat(200);
        let cut = seal(&alice, &pool, &[7; 32], &long).open(&alice, &pool, &[7; 32]).unwrap();
        assert!(cut.len() <= MAX_NAME && long.starts_with(&cut));
    }
}
