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

use crate::identity::{DataKeyEntry, IdentityView, RECOVERY_BY};

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

pub(crate) fn seal(key: &age::x25519::Identity, to: &str) -> Option<Vec<u8>> {
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

/// A new data key's entry, numbered after the newest, made by `signer`'s device: its secret
/// sealed to every device of `v` that is not retired and lists its recipient, and to the
/// recovery recipient. `None` if the numbers ran out.
pub fn make(v: &IdentityView, signer: &Signer, now_ms: i64) -> Option<DataKeyEntry> {
    let key = age::x25519::Identity::generate();
    // Numbered after the keys that count: a huge number planted by a device retired since
    // neither blocks this nor stays the newest.
    let n = usable(v).map(|(_, e)| e.n).max().unwrap_or(0).checked_add(1)?;
    let by = match signer.device_signed() {
        true => hex(&signer.author().device),
        false => RECOVERY_BY.to_string(),
    };
    let mut entry = DataKeyEntry {
        n,
        by,
        recipient: key.to_public().to_string(),
        at_ms: now_ms,
        ..Default::default()
    };
    for (to, r) in recipients(v) {
        if let Some(b) = seal(&key, &r) {
            entry.sealed.insert(to, b);
        }
    }
    Some(entry)
}

/// Where data keys go: every device not retired that lists its recipient (by node hex), and
/// the recovery recipient.
pub fn recipients(v: &IdentityView) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .devices
        .iter()
        .filter(|(_, d)| d.revoked_ms.is_none())
        .filter_map(|(n, d)| Some((hex(n), d.recipient.clone()?)))
        .collect();
    if let Some(r) = &v.recovery {
        out.push((RECOVERY.into(), r.clone()));
    }
    out
}

/// The data keys of `v` that count, in the order they were made: those made by the identity
/// key or by a device that is not retired (a retired device's keys are set aside: it knows
/// them).
pub fn usable(v: &IdentityView) -> impl Iterator<Item = (&String, &DataKeyEntry)> {
    v.keys.iter().filter(|(_, e)| {
        e.by == RECOVERY_BY
            || crate::view::parse_key(&e.by)
                .and_then(|n| v.devices.get(&n))
                .is_some_and(|d| d.revoked_ms.is_none())
    })
}

/// Opens `e` with what this device has: its own data key, or the recovery key where it holds
/// the identity key. Only a key that is what the entry says is taken (a device could seal
/// anything).
pub fn open_entry(e: &DataKeyEntry, signer: &Signer) -> Option<age::x25519::Identity> {
    let mine = hex(&signer.author().device);
    let opened =
        e.sealed.get(&mine).zip(device_key(signer)).and_then(|(b, k)| open(b, &k)).or_else(|| {
            e.sealed.get(RECOVERY).zip(recovery_key(signer)).and_then(|(b, k)| open(b, &k))
        });
    opened.filter(|k| k.to_public().to_string() == e.recipient)
}
