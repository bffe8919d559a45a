//! Data keys: what a retired device never sees.
//!
//! Objects are sealed (age) to the identity's newest data key. Every device lists in the
//! identity document the recipient of a key derived from its own node key, which never leaves
//! it; the identity key alone opens `recovery`. Retiring a device makes a new data key and
//! seals it to every device not retired and to `recovery` (`keys/<n>` in the identity
//! document): from then on new objects are sealed to it, and the retired device, which has
//! neither another device's node key nor the identity key, cannot open them. What it held
//! before stays readable to it (it had the keys); that is what retiring cannot take back.

use std::io::{Read, Write};

use kith_crdt::{Signer, hex};
use kith_node::keys::age_identity_from_bytes;

use crate::identity::{DataKeyEntry, IdentityView};

/// Key derivation context of a device's own data key (over its node key).
pub const DEVICE_DATA_CONTEXT: &str = "kith 2026-11 device data key v1";
/// Key derivation context of the recovery key (over the identity key).
pub const RECOVERY_CONTEXT: &str = "kith 2026-11 identity recovery data key v1";
/// Where a data key sealed to the recovery recipient is filed.
pub const RECOVERY: &str = "recovery";
/// Largest sealed data key opened (an age file around a 74-character secret).
const MAX_SEALED: usize = 4096;

/// This device's own data key, if the signer has a device key.
pub fn device_key(signer: &Signer) -> Option<age::x25519::Identity> {
    signer.derive_device_key(DEVICE_DATA_CONTEXT).map(|k| age_identity_from_bytes(&k))
}

/// The recovery key, if the signer holds the identity key.
pub fn recovery_key(signer: &Signer) -> Option<age::x25519::Identity> {
    signer.has_root().then(|| age_identity_from_bytes(&signer.derive_key(RECOVERY_CONTEXT)))
}

fn seal(key: &age::x25519::Identity, to: &str) -> Option<Vec<u8>> {
    use age::secrecy::ExposeSecret;
    let r: age::x25519::Recipient = to.parse().ok()?;
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).ok()?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).ok()?;
    w.write_all(key.to_string().expose_secret().as_bytes()).ok()?;
    w.finish().ok()?;
    Some(out)
}

fn open(sealed: &[u8], with: &age::x25519::Identity) -> Option<age::x25519::Identity> {
    if sealed.len() > MAX_SEALED {
        return None;
    }
    let dec = age::Decryptor::new(sealed).ok()?;
    let mut plain = String::new();
    dec.decrypt(std::iter::once(with as &dyn age::Identity))
        .ok()?
        .take(MAX_SEALED as u64)
        .read_to_string(&mut plain)
        .ok()?;
    plain.trim().parse().ok()
}

/// A new data key and its entry: sealed to every device of `v` that is not retired and lists
/// its recipient, and to the recovery recipient.
pub fn make(v: &IdentityView, now_ms: i64) -> (age::x25519::Identity, DataKeyEntry) {
    let key = age::x25519::Identity::generate();
    let mut entry = DataKeyEntry {
        recipient: key.to_public().to_string(),
        at_ms: now_ms,
        ..Default::default()
    };
    for (node, d) in &v.devices {
        if d.revoked_ms.is_some() {
            continue;
        }
        if let Some(b) = d.recipient.as_deref().and_then(|r| seal(&key, r)) {
            entry.sealed.insert(hex(node), b);
        }
    }
    if let Some(b) = v.recovery.as_deref().and_then(|r| seal(&key, r)) {
        entry.sealed.insert(RECOVERY.into(), b);
    }
    (key, entry)
}

/// The data keys of `v` this device can open (sealed to it, or to the recovery key when it
/// holds the identity key), oldest first, skipping those whose recipient is in `known`.
pub fn open_all(v: &IdentityView, signer: &Signer, known: &[String]) -> Vec<age::x25519::Identity> {
    let mine = hex(&signer.author().device);
    let dev = device_key(signer);
    let rec = recovery_key(signer);
    let mut out = Vec::new();
    for e in v.keys.values() {
        if known.contains(&e.recipient) {
            continue;
        }
        let opened = e
            .sealed
            .get(&mine)
            .zip(dev.as_ref())
            .and_then(|(b, k)| open(b, k))
            .or_else(|| e.sealed.get(RECOVERY).zip(rec.as_ref()).and_then(|(b, k)| open(b, k)));
        // Only a key that is what the entry says (a device could seal anything).
        if let Some(k) = opened.filter(|k| k.to_public().to_string() == e.recipient) {
            out.push(k);
        }
    }
    out
}
