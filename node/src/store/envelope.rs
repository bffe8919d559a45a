//! The chunk envelope: how one chunk is compressed, encrypted and addressed.
//!
//! ```text
//! key      = BLAKE3-keyed(chunk_secret, plaintext)            convergent per user
//! payload  = zstd(plaintext) if that is smaller, else plaintext
//! header   = [version = 1, codec (0 raw, 1 zstd)]
//! nonce    = BLAKE3-keyed(key, header || payload)[..12]       synthetic (SIV-style)
//! envelope = header || nonce || ChaCha20-Poly1305(key, nonce, aad = header, payload)
//! id       = BLAKE3(envelope)
//! ```
//!
//! The nonce is derived from what is encrypted, so the same key never encrypts two different
//! payloads under one nonce, even if another zstd version compresses the same plaintext
//! differently. On opening, the key is recomputed from the plaintext and compared with the
//! manifest's: ChaCha20-Poly1305 is not key-committing, and this also checks the chunk end to end.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::ids::ChunkId;

/// Version byte of the envelope this build writes (and the newest it reads).
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes an envelope adds to its payload: header, nonce and tag.
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// zstd level: as restic's default ("auto"), good ratio at several hundred MB/s.
pub const ZSTD_LEVEL: i32 = 3;

const HEADER_LEN: usize = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// The per-chunk key: a keyed hash of the chunk's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkKey(pub [u8; 32]);

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// Secrets derived from an identity's store secret. Each use has its own key, so no value
/// computed for one purpose can be replayed for another.
#[derive(Clone)]
pub struct StoreKeys {
    chunk: [u8; 32],
    token: [u8; 32],
    lineage: [u8; 32],
    cdc_seed: u64,
}

impl StoreKeys {
    /// Derives the store keys from an identity's store secret.
    pub fn derive(store_secret: &[u8; 32]) -> Self {
        let d = |ctx: &str| blake3::derive_key(ctx, store_secret);
        let seed = d("kith 2026-11 cdc gear seed v1");
        Self {
            chunk: d("kith 2026-11 chunk key v1"),
            token: d("kith 2026-11 dedup token v1"),
            lineage: d("kith 2026-11 lineage name v1"),
            cdc_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
        }
    }

    /// The convergent key of a chunk.
    pub fn chunk_key(&self, plaintext: &[u8]) -> ChunkKey {
        ChunkKey(*blake3::keyed_hash(&self.chunk, plaintext).as_bytes())
    }

    /// The dedup token of a chunk key: lets the local index find a chunk by its plaintext
    /// without storing the key itself.
    pub fn token(&self, key: &ChunkKey) -> [u8; 32] {
        *blake3::keyed_hash(&self.token, &key.0).as_bytes()
    }

    /// The opaque name of an object's lineage (the versions of one source path).
    pub fn lineage(&self, source: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.lineage, source).as_bytes()
    }

    /// The seed of the chunker's gear table: secret chunk boundaries.
    pub fn cdc_seed(&self) -> u64 {
        self.cdc_seed
    }
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than header, nonce and tag.
    #[error("the envelope is truncated ({0} bytes)")]
    Truncated(usize),
    /// Written by a newer kith.
    #[error(
        "envelope version {0} is newer than this kith reads ({ENVELOPE_VERSION}): upgrade kith"
    )]
    UnknownVersion(u8),
    /// Unknown compression.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// Authentication failed: wrong key or altered bytes.
    #[error("decryption failed (wrong key or altered bytes)")]
    Decrypt,
    /// zstd failed or produced the wrong length.
    #[error("decompression failed: {0}")]
    Decompress(String),
    /// The plaintext has a different length than the manifest says.
    #[error("the chunk has {found} bytes, the manifest says {expected}")]
    Length {
        /// Length in the manifest.
        expected: u32,
        /// Length found.
        found: usize,
    },
    /// The plaintext does not hash to the key it was opened with.
    #[error("the plaintext does not match its key")]
    KeyMismatch,
    /// The manifest names a chunk longer than any chunker makes: refused before decompressing,
    /// so a crafted manifest cannot make the reader allocate its number.
    #[error("the manifest names a chunk of {0} bytes; chunks are at most {MAX_PLAIN_LEN}")]
    TooLong(u32),
}

/// The longest chunk plaintext (the chunker's largest allowed maximum).
pub const MAX_PLAIN_LEN: u32 = 16 << 20;

/// Whether sealing tries zstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Compress if that saves space.
    Try,
    /// Store as is: the data is compressed already.
    Skip,
}

impl Compression {
    /// `Skip` for data that starts like a compressed format (gzip, bzip2, xz, zstd, zip, 7z,
    /// PNG, JPEG, WOFF2, Ogg...), where zstd would spend time and save nothing.
    pub fn for_head(head: &[u8]) -> Self {
        const MAGICS: &[&[u8]] = &[
            b"\x1f\x8b",           // gzip
            b"BZh",                // bzip2
            b"\xfd7zXZ\x00",       // xz
            b"\x28\xb5\x2f\xfd",   // zstd
            b"PK\x03\x04",         // zip, jar, docx, odt, apk
            b"7z\xbc\xaf\x27\x1c", // 7z
            b"\x89PNG\r\n\x1a\n",  // PNG
            b"\xff\xd8\xff",       // JPEG
            b"wOF2",               // WOFF2
            b"OggS",               // Ogg
            b"\x04\x22\x4d\x18",   // lz4
        ];
        if MAGICS.iter().any(|m| head.starts_with(m)) {
            Compression::Skip
        } else {
            Compression::Try
        }
    }
}

/// Seals chunks; one per thread (it owns a zstd context).
pub struct Sealer {
    compressor: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
}

impl Sealer {
    /// A sealer with its own compression context.
    pub fn new() -> Self {
        let compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd accepts its default level");
        Self { compressor, buf: Vec::new() }
    }

    /// Seals `plaintext` under `key` and returns the envelope and its id. With
    /// `Compression::Skip` (data known to be compressed already) zstd is not tried.
    pub fn seal(
        &mut self,
        key: &ChunkKey,
        plaintext: &[u8],
        compression: Compression,
    ) -> (Vec<u8>, ChunkId) {
        let bound = zstd::zstd_safe::compress_bound(plaintext.len());
        self.buf.clear();
        let compressed = compression == Compression::Try && {
            self.buf.reserve(bound);
            self.compressor.compress_to_buffer(plaintext, &mut self.buf).is_ok()
                && self.buf.len() < plaintext.len()
        };
        let (codec, payload) =
            if compressed { (CODEC_ZSTD, &self.buf[..]) } else { (CODEC_RAW, plaintext) };
        let envelope = seal_payload(key, codec, payload);
        let id = ChunkId::of(&envelope);
        (envelope, id)
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new()
    }
}

fn seal_payload(key: &ChunkKey, codec: u8, payload: &[u8]) -> Vec<u8> {
    let header = [ENVELOPE_VERSION, codec];
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(&header);
    h.update(payload);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&h.finalize().as_bytes()[..NONCE_LEN]);

    let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(payload);
    let aead = aead_key(key);
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut out[HEADER_LEN + NONCE_LEN..],
        )
        .expect("payload is far below ChaCha20-Poly1305's limit");
    out.extend_from_slice(tag.as_ref());
    out
}

fn aead_key(key: &ChunkKey) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key.0).expect("32-byte key"))
}

/// Opens an envelope: decrypts, decompresses and checks length and key.
pub fn open(
    keys: &StoreKeys,
    envelope: &[u8],
    key: &ChunkKey,
    plain_len: u32,
) -> Result<Vec<u8>, OpenError> {
    let plain = open_with_key(envelope, key, plain_len)?;
    if keys.chunk_key(&plain) != *key {
        return Err(OpenError::KeyMismatch);
    }
    Ok(plain)
}

/// Opens an envelope with its key alone: decrypts, decompresses and checks the length, but
/// cannot check that the key is the chunk's own (that needs the secret it was derived from).
/// For readers that reached the envelope by a chain of hashes (its id named in an
/// authenticated index), where nobody could have chosen its bytes.
pub fn open_with_key(
    envelope: &[u8],
    key: &ChunkKey,
    plain_len: u32,
) -> Result<Vec<u8>, OpenError> {
    if envelope.len() < ENVELOPE_OVERHEAD {
        return Err(OpenError::Truncated(envelope.len()));
    }
    if plain_len > MAX_PLAIN_LEN {
        return Err(OpenError::TooLong(plain_len));
    }
    let (version, codec) = (envelope[0], envelope[1]);
    if version != ENVELOPE_VERSION {
        return Err(OpenError::UnknownVersion(version));
    }
    if codec != CODEC_RAW && codec != CODEC_ZSTD {
        return Err(OpenError::UnknownCodec(codec));
    }
    let nonce: [u8; NONCE_LEN] =
        envelope[HEADER_LEN..HEADER_LEN + NONCE_LEN].try_into().expect("length checked");
    let mut body = envelope[HEADER_LEN + NONCE_LEN..].to_vec();
    let payload_len = aead_key(key)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from([version, codec]), &mut body)
        .map_err(|_| OpenError::Decrypt)?
        .len();
    body.truncate(payload_len);
    let plain = if codec == CODEC_ZSTD {
        decompress(&body, plain_len as usize).map_err(|e| OpenError::Decompress(e.to_string()))?
    } else {
        body
    };
    if plain.len() != plain_len as usize {
        return Err(OpenError::Length { expected: plain_len, found: plain.len() });
    }
    Ok(plain)
}

thread_local! {
    /// Each thread's zstd decompression context, reused: making one per chunk (about 100 KiB
    /// of tables, allocated and cleared) made a restore of many small files a quarter slower
    /// (docs/benchmarks.md, Store).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses `body` into at most `cap` bytes with this thread's context.
fn decompress(body: &[u8], cap: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let d = match &mut *d {
            Some(d) => d,
            None => d.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(body, cap)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_naming_a_huge_chunk_is_refused_before_decompressing() {
        let keys = keys();
        let plain = vec![0u8; 1 << 20];
        let key = keys.chunk_key(&plain);
        let (env, _) = Sealer::new().seal(&key, &plain, Compression::Try);
        assert_eq!(open(&keys, &env, &key, 1 << 20).expect("opens"), plain);
        let e = open(&keys, &env, &key, u32::MAX).unwrap_err();
        assert!(matches!(e, OpenError::TooLong(u32::MAX)), "{e}");
        let e = open(&keys, &env, &key, (1 << 20) - 1).unwrap_err();
        assert!(matches!(e, OpenError::Decompress(_) | OpenError::Length { .. }), "{e}");
    }

    fn keys() -> StoreKeys {
        StoreKeys::derive(&[7; 32])
    }

    #[test]
    fn seal_open_round_trip_and_determinism() {
        let keys = keys();
        let mut sealer = Sealer::new();
        for plain in
            [b"".to_vec(), vec![b'a'; 100_000], (0..70_000u32).map(|i| (i * 7919) as u8).collect()]
        {
            let key = keys.chunk_key(&plain);
            let (env, id) = sealer.seal(&key, &plain, Compression::Try);
            assert_eq!(ChunkId::of(&env), id);
            assert_eq!(
                sealer.seal(&key, &plain, Compression::Try).1,
                id,
                "sealing is deterministic"
            );
            assert_eq!(open(&keys, &env, &key, plain.len() as u32).unwrap(), plain);
        }
    }

    #[test]
    fn compressible_chunks_shrink() {
        let keys = keys();
        let plain = vec![b'x'; 64 * 1024];
        let (env, _) = Sealer::new().seal(&keys.chunk_key(&plain), &plain, Compression::Try);
        assert_eq!(env[1], CODEC_ZSTD);
        assert!(env.len() < 1024, "{}", env.len());
        let (raw, _) = Sealer::new().seal(&keys.chunk_key(&plain), &plain, Compression::Skip);
        assert_eq!(raw[1], CODEC_RAW);
        assert_eq!(raw.len(), plain.len() + ENVELOPE_OVERHEAD);
        assert_eq!(Compression::for_head(b"\x1f\x8b\x08\x00rest"), Compression::Skip);
        assert_eq!(Compression::for_head(b"plain text"), Compression::Try);
    }

    #[test]
    fn tampering_and_wrong_keys_are_detected() {
        let keys = keys();
        let plain = b"the quick brown fox".to_vec();
        let key = keys.chunk_key(&plain);
        let (env, _) = Sealer::new().seal(&key, &plain, Compression::Try);
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 1;
            assert!(open(&keys, &bad, &key, plain.len() as u32).is_err(), "flip at {i}");
        }
        let other = keys.chunk_key(b"something else");
        assert_eq!(open(&keys, &env, &other, plain.len() as u32), Err(OpenError::Decrypt));
        assert_eq!(open(&keys, &env[..10], &key, 19), Err(OpenError::Truncated(10)));
        // A different user's keys derive a different chunk key: the commitment check catches
        // an envelope opened with a key that was not derived from its plaintext.
        let stranger = StoreKeys::derive(&[8; 32]);
        assert_eq!(open(&stranger, &env, &key, 19), Err(OpenError::KeyMismatch));
    }
}
