//! The on-disk form of a signed document: versioned CBOR around automerge's compact save.

use std::collections::BTreeMap;

use automerge::{AutoCommit, ChangeHash};

use crate::signed::{Author, DocError, Sig, SignedBy, SignedDoc, hex};
use crate::sync::SigEntry;

/// Version of the document file format written by this build (version 1 is read too).
///
/// Version 2 keeps each device's key and certificate once (`certs`, 96 bytes each) and, for a
/// change a device signed, only the device's 64-byte signature and the index of its
/// certificate (`packed`); version 1 lists every signature whole (`sigs`).
pub const DOC_FILE_VERSION: u32 = 2;

#[derive(minicbor::Encode, minicbor::Decode)]
struct DocFile {
    #[n(0)]
    version: u32,
    #[n(1)]
    kind: String,
    #[cbor(n(2), with = "minicbor::bytes")]
    id: [u8; 32],
    #[cbor(n(3), with = "minicbor::bytes")]
    doc: Vec<u8>,
    #[n(4)]
    sigs: Vec<SigEntry>,
    #[n(5)]
    certs: Option<Vec<minicbor::bytes::ByteVec>>,
    #[n(6)]
    packed: Option<Vec<PackedSig>>,
}

/// A signature in a version 2 file: whole (the identity key's), or a device's signature and
/// the index of its key and certificate in `certs`.
#[derive(minicbor::Encode, minicbor::Decode)]
struct PackedSig {
    #[cbor(n(0), with = "minicbor::bytes")]
    hash: [u8; 32],
    #[cbor(n(1), with = "minicbor::bytes")]
    sig: Vec<u8>,
    #[n(2)]
    cert: Option<u32>,
}

/// Device key and certificate: the first 96 bytes of a device's signature.
const CERT_LEN: usize = crate::signed::DEVICE_SIG_LEN - 64;

impl SignedDoc {
    /// The document as bytes, labelled with `kind` (such as `kith-pool`).
    pub fn save(&mut self, kind: &str) -> Vec<u8> {
        let mut certs: Vec<minicbor::bytes::ByteVec> = Vec::new();
        let mut index: std::collections::HashMap<&[u8], u32> = std::collections::HashMap::new();
        let mut packed = Vec::with_capacity(self.sigs.len());
        for (h, s) in &self.sigs {
            if s.len() == crate::signed::DEVICE_SIG_LEN {
                let (cert, sig) = s.split_at(CERT_LEN);
                let i = *index.entry(cert).or_insert_with(|| {
                    certs.push(cert.to_vec().into());
                    (certs.len() - 1) as u32
                });
                packed.push(PackedSig { hash: h.0, sig: sig.to_vec(), cert: Some(i) });
            } else {
                packed.push(PackedSig { hash: h.0, sig: s.clone(), cert: None });
            }
        }
        let file = DocFile {
            version: DOC_FILE_VERSION,
            kind: kind.to_string(),
            id: *self.id(),
            doc: self.doc.save(),
            sigs: Vec::new(),
            certs: Some(certs),
            packed: Some(packed),
        };
        minicbor::to_vec(&file).expect("encoding to a Vec cannot fail")
    }

    /// Reads a saved document of the given kind; every change's signature is verified again.
    /// Authorisation is not re-run: the file holds only changes this node accepted.
    pub fn load(bytes: &[u8], kind: &str) -> Result<SignedDoc, DocError> {
        let file: DocFile = minicbor::decode(bytes)
            .map_err(|e| DocError::Format(format!("not a kith document: {e}")))?;
        if file.version > DOC_FILE_VERSION {
            return Err(DocError::Format(format!(
                "format version {} is newer than this kith understands ({DOC_FILE_VERSION}); upgrade kith",
                file.version
            )));
        }
        if file.kind != kind {
            return Err(DocError::Format(format!("a {} document, expected {kind}", file.kind)));
        }
        let mut budget = crate::bounds::MAX_INFLATED_BYTES;
        crate::bounds::check_chunks(&file.doc, &mut budget)?;
        let mut doc = crate::signed::guard(|| Ok(AutoCommit::load(&file.doc)?))?;
        let certs = file.certs.unwrap_or_default();
        if certs.iter().any(|c| c.len() != CERT_LEN) {
            return Err(DocError::Format("a device certificate of the wrong length".into()));
        }
        let mut sigs: BTreeMap<ChangeHash, Sig> =
            file.sigs.into_iter().map(|s| (ChangeHash(s.hash), s.sig)).collect();
        for p in file.packed.unwrap_or_default() {
            let sig = match p.cert {
                None => p.sig,
                Some(i) => {
                    let cert = certs.get(i as usize).ok_or_else(|| {
                        DocError::Format("a signature names a certificate the file lacks".into())
                    })?;
                    [&cert[..], &p.sig[..]].concat()
                }
            };
            sigs.insert(ChangeHash(p.hash), sig);
        }
        let changes = doc.get_changes(&[]);
        let mut roots = 0;
        for c in &changes {
            let h = c.hash();
            let author =
                Author::from_actor(c.actor_id()).ok_or(DocError::BadActor { change: hex(&h.0) })?;
            let sig = sigs.get(&h).ok_or(DocError::MissingSignature { change: hex(&h.0) })?;
            let by = crate::signed::signed_by(
                &author.key,
                &crate::signed::signing_message(&file.id, &h),
                sig,
            );
            if by.is_none_or(|by| matches!(by, SignedBy::Device(d) if d != author.device)) {
                return Err(DocError::BadSignature { change: hex(&h.0), author: hex(&author.key) });
            }
            if c.deps().is_empty() {
                roots += 1;
                if h.0 != file.id {
                    return Err(DocError::ForeignGenesis { change: hex(&h.0), id: hex(&file.id) });
                }
            }
        }
        if roots != 1 {
            return Err(DocError::Format(format!("{roots} genesis changes, expected one")));
        }
        let sigs =
            changes.iter().filter_map(|c| Some((c.hash(), sigs.get(&c.hash())?.clone()))).collect();
        Ok(SignedDoc::from_parts(file.id, doc, sigs))
    }
}
