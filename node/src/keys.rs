//! Keys: the node's endpoint key and the user's identity, their key files, and passphrase export.
//!
//! A key file is a CBOR array whose first two fields are a kind string and a format version
//! (see `docs/formats.md`). The identity is what a person carries between machines; the node
//! key belongs to one device and is never exported.

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use age::secrecy::{ExposeSecret, SecretString};
use iroh_base::{PublicKey, SecretKey};
use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};

/// Kind string of an identity key file.
pub const IDENTITY_FILE_KIND: &str = "kith-identity";
/// Newest identity key file version this build reads. Version 1 is written while it says
/// everything (the identity key and one data key), version 2 once a device holds no identity
/// key or a later data key.
pub const IDENTITY_FILE_VERSION: u32 = 2;
/// Kind string of a node key file.
pub const NODE_KEY_FILE_KIND: &str = "kith-node-key";
/// Newest node key file version this build reads and the one it writes.
pub const NODE_KEY_FILE_VERSION: u32 = 1;
/// Key files and exports are tiny; anything larger is not one.
pub const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

/// Why bytes are not a usable key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The bytes end before the key file does.
    #[error("it is truncated (the data ends before the key does)")]
    Truncated,
    /// The bytes are not a key file of the expected layout.
    #[error("it is not a valid key file ({0})")]
    Malformed(String),
    /// The file holds another kind of key.
    #[error("it holds a '{found}' key, not a '{expected}' key")]
    WrongKind {
        /// The kind that was expected.
        expected: &'static str,
        /// The kind found in the file.
        found: String,
    },
    /// The file was written by a newer kith.
    #[error(
        "it has format version {found}; this kith reads versions up to {supported}: upgrade kith"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The file is larger than any key file.
    #[error("it is {0} bytes, larger than any key file")]
    TooLarge(usize),
}

/// Why an identity export could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The passphrase does not open the export.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The file is not an age file encrypted with a passphrase.
    #[error("it is not a kith key export (an age file encrypted with a passphrase)")]
    NotAnExport,
    /// The export is truncated or damaged.
    #[error("it is truncated or damaged ({0})")]
    Damaged(String),
    /// The export asks for more scrypt work than this machine accepts.
    #[error("its passphrase work factor 2^{0} is higher than this machine accepts")]
    ExcessiveWork(u8),
    /// The decrypted contents are not an identity.
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
}

/// Why an identity could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The passphrase is empty.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// This device holds no identity key to export.
    #[error(
        "this device does not hold your identity key (it was imported as a device); \
         the export you imported it from is your key: keep that one, or export from the device \
         that holds the key"
    )]
    NoIdentityKey,
    /// age failed to encrypt.
    #[error("encryption failed: {0}")]
    Encrypt(#[from] std::io::Error),
}

/// The node's endpoint key: it names this device on the network (the iroh endpoint id).
#[derive(Clone)]
pub struct NodeKey {
    secret: SecretKey,
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct KeyFileHeader {
    #[n(0)]
    kind: String,
    #[n(1)]
    version: u32,
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct NodeKeyFileV1 {
    #[n(0)]
    kind: String,
    #[n(1)]
    version: u32,
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    secret: [u8; 32],
}

impl NodeKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self { secret: SecretKey::generate() }
    }

    /// The public id of this node (an iroh endpoint id).
    pub fn id(&self) -> PublicKey {
        self.secret.public()
    }

    /// The secret key, for binding an endpoint.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// Encodes the key file.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let file = NodeKeyFileV1 {
            kind: NODE_KEY_FILE_KIND.into(),
            version: NODE_KEY_FILE_VERSION,
            secret: self.secret.to_bytes(),
        };
        minicbor::to_vec(&file).expect("encoding into a Vec cannot fail")
    }

    /// Decodes a key file.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyFileError> {
        check_header(bytes, NODE_KEY_FILE_KIND, NODE_KEY_FILE_VERSION)?;
        let file: NodeKeyFileV1 = minicbor::decode(bytes).map_err(cbor_error)?;
        Ok(Self { secret: SecretKey::from_bytes(&file.secret) })
    }
}

/// A person's identity: an Ed25519 signing key, an age X25519 key, and the secret that keys
/// their chunk store (convergent encryption, chunk boundaries, lineage names).
///
/// A device imported as a device only ([`Identity::into_device`]) holds no signing key: it
/// signs with its node key, which the identity certified ([`DeviceGrant`]), so the identity's
/// other devices can cut it off. Data keys rotate when a device is retired: `later` holds the
/// keys made since (oldest first); new objects are sealed to the newest.
#[derive(Clone)]
pub struct Identity {
    id: PublicKey,
    signing: Option<SecretKey>,
    age: age::x25519::Identity,
    later: Vec<age::x25519::Identity>,
    store_secret: [u8; 32],
    created_ms: u64,
    grant: Option<DeviceGrant>,
}

/// What a device without the identity key holds in its place, made by the identity when the
/// device was imported (formats: `kith_crdt::Sig` and `kith_pools::identity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGrant {
    /// The node (device) key this grant is for.
    pub node: [u8; 32],
    /// The identity's certificate of that node key.
    pub cert: [u8; 64],
    /// Keys the identity derived for the device (context, key), see `Signer::derive_key`.
    pub derived: Vec<(String, [u8; 32])>,
    /// The identity's signature of its document's (deterministic) first change.
    pub genesis_sig: [u8; 64],
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct IdentityFileV1 {
    #[n(0)]
    kind: String,
    #[n(1)]
    version: u32,
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    signing: [u8; 32],
    #[n(3)]
    age: String,
    #[n(4)]
    #[cbor(with = "minicbor::bytes")]
    store_secret: [u8; 32],
    #[n(5)]
    created_ms: u64,
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct IdentityFileV2 {
    #[n(0)]
    kind: String,
    #[n(1)]
    version: u32,
    /// The identity secret key, or empty on a device that does not hold it.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    signing: Vec<u8>,
    #[n(3)]
    age: String,
    #[n(4)]
    #[cbor(with = "minicbor::bytes")]
    store_secret: [u8; 32],
    #[n(5)]
    created_ms: u64,
    #[n(6)]
    #[cbor(with = "minicbor::bytes")]
    identity: [u8; 32],
    #[n(7)]
    later: Vec<String>,
    #[n(8)]
    grant: Option<GrantV2>,
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct GrantV2 {
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    node: [u8; 32],
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    cert: [u8; 64],
    #[n(2)]
    derived: Vec<(String, ByteArray<32>)>,
    #[n(3)]
    #[cbor(with = "minicbor::bytes")]
    genesis_sig: [u8; 64],
}

/// An age X25519 identity from 32 secret bytes (a key derived, not generated).
pub fn age_identity_from_bytes(secret: &[u8; 32]) -> age::x25519::Identity {
    let hrp = bech32::Hrp::parse("age-secret-key-").expect("a valid prefix");
    let text = bech32::encode::<bech32::Bech32>(hrp, secret).expect("32 bytes encode");
    text.to_uppercase().parse().expect("a bech32 age secret key parses")
}

fn parse_age(s: &str) -> Result<age::x25519::Identity, KeyFileError> {
    s.parse::<age::x25519::Identity>()
        .map_err(|e| KeyFileError::Malformed(format!("bad age key: {e}")))
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        let mut store_secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut store_secret)
            .expect("the system random source works");
        let signing = SecretKey::generate();
        Self {
            id: signing.public(),
            signing: Some(signing),
            age: age::x25519::Identity::generate(),
            later: Vec::new(),
            store_secret,
            created_ms: now_ms(),
            grant: None,
        }
    }

    /// The identity's public id: its Ed25519 public key.
    pub fn id(&self) -> PublicKey {
        self.id
    }

    /// The Ed25519 signing key, if this device holds it.
    pub fn signing_key(&self) -> Option<&SecretKey> {
        self.signing.as_ref()
    }

    /// What this device holds in place of the identity key, if it was imported as a device.
    pub fn grant(&self) -> Option<&DeviceGrant> {
        self.grant.as_ref()
    }

    /// This identity as a device that does not hold the identity key: `grant` is what the
    /// identity gave it.
    pub fn into_device(mut self, grant: DeviceGrant) -> Self {
        self.signing = None;
        self.grant = Some(grant);
        self
    }

    /// The first age identity (the one the identity was made with).
    pub fn age_identity(&self) -> &age::x25519::Identity {
        &self.age
    }

    /// Every data key this device holds, the first one first.
    pub fn data_keys(&self) -> Vec<&age::x25519::Identity> {
        std::iter::once(&self.age).chain(self.later.iter()).collect()
    }

    /// This identity with the later data keys `ordered` (oldest first) after those it holds
    /// that are not among them; `None` when that changes nothing.
    pub fn with_data_keys(&self, ordered: &[age::x25519::Identity]) -> Option<Self> {
        let r = |k: &age::x25519::Identity| k.to_public().to_string();
        let first = r(&self.age);
        let given: Vec<String> = ordered.iter().map(r).collect();
        let mut later: Vec<age::x25519::Identity> =
            self.later.iter().filter(|k| !given.contains(&r(k))).cloned().collect();
        later.extend(ordered.iter().filter(|k| r(k) != first).cloned());
        if later.iter().map(r).eq(self.later.iter().map(r)) {
            return None;
        }
        Some(Self { later, ..self.clone() })
    }

    /// The age recipient new objects are sealed to: the newest data key.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.later.last().unwrap_or(&self.age).to_public()
    }

    /// The secret that keys this person's chunk store.
    pub fn store_secret(&self) -> &[u8; 32] {
        &self.store_secret
    }

    /// When the identity was created (milliseconds since the Unix epoch).
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// Encodes the key file.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let age = |a: &age::x25519::Identity| a.to_string().expose_secret().to_string();
        if let (Some(signing), true, None) = (&self.signing, self.later.is_empty(), &self.grant) {
            let file = IdentityFileV1 {
                kind: IDENTITY_FILE_KIND.into(),
                version: 1,
                signing: signing.to_bytes(),
                age: age(&self.age),
                store_secret: self.store_secret,
                created_ms: self.created_ms,
            };
            return minicbor::to_vec(&file).expect("encoding into a Vec cannot fail");
        }
        let file = IdentityFileV2 {
            kind: IDENTITY_FILE_KIND.into(),
            version: 2,
            signing: self.signing.as_ref().map(|s| s.to_bytes().to_vec()).unwrap_or_default(),
            age: age(&self.age),
            store_secret: self.store_secret,
            created_ms: self.created_ms,
            identity: *self.id.as_bytes(),
            later: self.later.iter().map(age).collect(),
            grant: self.grant.as_ref().map(|g| GrantV2 {
                node: g.node,
                cert: g.cert,
                derived: g.derived.iter().map(|(c, k)| (c.clone(), ByteArray::from(*k))).collect(),
                genesis_sig: g.genesis_sig,
            }),
        };
        minicbor::to_vec(&file).expect("encoding into a Vec cannot fail")
    }

    /// Decodes a key file.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyFileError> {
        check_header(bytes, IDENTITY_FILE_KIND, IDENTITY_FILE_VERSION)?;
        let header: KeyFileHeader = minicbor::decode(bytes).map_err(cbor_error)?;
        if header.version == 1 {
            let file: IdentityFileV1 = minicbor::decode(bytes).map_err(cbor_error)?;
            let signing = SecretKey::from_bytes(&file.signing);
            return Ok(Self {
                id: signing.public(),
                signing: Some(signing),
                age: parse_age(&file.age)?,
                later: Vec::new(),
                store_secret: file.store_secret,
                created_ms: file.created_ms,
                grant: None,
            });
        }
        let file: IdentityFileV2 = minicbor::decode(bytes).map_err(cbor_error)?;
        let signing = match file.signing.len() {
            0 => None,
            32 => Some(SecretKey::from_bytes(&file.signing.try_into().expect("32 bytes"))),
            n => return Err(KeyFileError::Malformed(format!("an identity key of {n} bytes"))),
        };
        let id = PublicKey::from_bytes(&file.identity)
            .map_err(|e| KeyFileError::Malformed(format!("bad identity key: {e}")))?;
        if signing.as_ref().is_some_and(|s| s.public() != id) {
            return Err(KeyFileError::Malformed("the identity key does not match its id".into()));
        }
        let grant = file.grant.map(|g| DeviceGrant {
            node: g.node,
            cert: g.cert,
            derived: g.derived.into_iter().map(|(c, k)| (c, *k)).collect(),
            genesis_sig: g.genesis_sig,
        });
        if signing.is_none() && grant.is_none() {
            return Err(KeyFileError::Malformed(
                "it holds neither a key nor a device grant".into(),
            ));
        }
        Ok(Self {
            id,
            signing,
            age: parse_age(&file.age)?,
            later: file.later.iter().map(|a| parse_age(a)).collect::<Result<_, _>>()?,
            store_secret: file.store_secret,
            created_ms: file.created_ms,
            grant,
        })
    }

    /// Encrypts the identity with a passphrase (age, scrypt), ASCII-armored.
    pub fn export(&self, passphrase: &str) -> Result<Vec<u8>, ExportError> {
        if passphrase.is_empty() {
            return Err(ExportError::EmptyPassphrase);
        }
        if self.signing.is_none() {
            return Err(ExportError::NoIdentityKey);
        }
        let encryptor =
            age::Encryptor::with_user_passphrase(SecretString::from(passphrase.to_string()));
        let mut out = Vec::new();
        let armor =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)?;
        let mut writer = encryptor.wrap_output(armor)?;
        writer.write_all(&self.to_file_bytes())?;
        writer.finish()?.finish()?;
        Ok(out)
    }

    /// Decrypts an export made by [`Identity::export`].
    pub fn import(export: &[u8], passphrase: &str) -> Result<Self, ImportError> {
        if export.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyFileError::TooLarge(export.len()).into());
        }
        let head = export.trim_ascii_start();
        if !head.starts_with(b"age-encryption.org/")
            && !head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        {
            return Err(ImportError::NotAnExport);
        }
        let reader = age::armor::ArmoredReader::new(export);
        let decryptor = age::Decryptor::new(reader).map_err(import_error)?;
        if !decryptor.is_scrypt() {
            return Err(ImportError::NotAnExport);
        }
        let identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_string()));
        let mut plain = Vec::new();
        decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(import_error)?
            .take(MAX_KEY_FILE_BYTES as u64)
            .read_to_end(&mut plain)
            .map_err(|e| ImportError::Damaged(e.to_string()))?;
        Ok(Self::from_file_bytes(&plain)?)
    }
}

fn import_error(e: age::DecryptError) -> ImportError {
    use age::DecryptError as D;
    match e {
        D::DecryptionFailed | D::KeyDecryptionFailed | D::NoMatchingKeys => {
            ImportError::WrongPassphrase
        }
        D::ExcessiveWork { required, .. } => ImportError::ExcessiveWork(required),
        D::InvalidHeader | D::UnknownFormat => ImportError::NotAnExport,
        other => ImportError::Damaged(other.to_string()),
    }
}

fn check_header(bytes: &[u8], kind: &'static str, supported: u32) -> Result<(), KeyFileError> {
    if bytes.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge(bytes.len()));
    }
    let header: KeyFileHeader = minicbor::decode(bytes).map_err(cbor_error)?;
    if header.kind != kind {
        return Err(KeyFileError::WrongKind { expected: kind, found: header.kind });
    }
    if header.version == 0 || header.version > supported {
        return Err(KeyFileError::UnsupportedVersion { found: header.version, supported });
    }
    Ok(())
}

fn cbor_error(e: minicbor::decode::Error) -> KeyFileError {
    if e.is_end_of_input() {
        KeyFileError::Truncated
    } else {
        KeyFileError::Malformed(e.to_string())
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trip() {
        let id = Identity::generate();
        let back = Identity::from_file_bytes(&id.to_file_bytes()).unwrap();
        assert_eq!(back.id(), id.id());
        assert_eq!(back.recipient().to_string(), id.recipient().to_string());
        assert_eq!(back.store_secret(), id.store_secret());
    }

    #[test]
    fn a_device_file_keeps_its_grant_and_data_keys_but_no_identity_key() {
        let id = Identity::generate();
        assert_eq!(id.to_file_bytes()[..], id.to_file_bytes()[..]);
        let grant = DeviceGrant {
            node: [5; 32],
            cert: [6; 64],
            derived: vec![("ctx".into(), [7; 32])],
            genesis_sig: [8; 64],
        };
        let dev = id.clone().into_device(grant.clone());
        let dev = dev.with_data_keys(&[age_identity_from_bytes(&[9; 32])]).unwrap();
        assert!(dev.with_data_keys(&[age_identity_from_bytes(&[9; 32])]).is_none(), "once");
        let bytes = dev.to_file_bytes();
        assert!(!bytes.windows(32).any(|w| w == id.signing_key().unwrap().to_bytes()));
        let back = Identity::from_file_bytes(&bytes).unwrap();
        assert!(back.signing_key().is_none());
        assert_eq!(back.id(), id.id());
        assert_eq!(back.grant(), Some(&grant));
        assert_eq!(back.data_keys().len(), 2);
        assert_eq!(
            back.recipient().to_string(),
            age_identity_from_bytes(&[9; 32]).to_public().to_string()
        );
        assert!(matches!(back.export("pw"), Err(ExportError::NoIdentityKey)));
        // The identity with a later data key exports it (v2), and reads back whole.
        let full = id.with_data_keys(&[age_identity_from_bytes(&[9; 32])]).unwrap();
        let back = Identity::from_file_bytes(&full.to_file_bytes()).unwrap();
        assert_eq!(back.signing_key().unwrap().public(), id.id());
        assert_eq!(back.data_keys().len(), 2);
        // A derived key is the same age identity wherever it is made, and a real one.
        let a = age_identity_from_bytes(&[1; 32]);
        assert_eq!(
            a.to_public().to_string(),
            age_identity_from_bytes(&[1; 32]).to_public().to_string()
        );
        assert_ne!(
            a.to_public().to_string(),
            age_identity_from_bytes(&[2; 32]).to_public().to_string()
        );
    }

    #[test]
    fn truncated_and_wrong_kind_key_files_are_rejected() {
        let bytes = Identity::generate().to_file_bytes();
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            let e = Identity::from_file_bytes(&bytes[..cut]).err().unwrap();
            assert!(matches!(e, KeyFileError::Truncated), "cut at {cut}: {e}");
        }
        let node = NodeKey::generate().to_file_bytes();
        let e = Identity::from_file_bytes(&node).err().unwrap();
        assert!(e.to_string().contains("'kith-node-key' key"), "{e}");
    }

    #[test]
    fn newer_versions_are_refused_by_name() {
        let file = NodeKeyFileV1 { kind: NODE_KEY_FILE_KIND.into(), version: 7, secret: [1; 32] };
        let e = NodeKey::from_file_bytes(&minicbor::to_vec(&file).unwrap()).err().unwrap();
        assert!(e.to_string().contains("format version 7"), "{e}");
    }
}
