//! The on-disk form of a signed document: versioned CBOR around automerge's compact save.

use std::collections::BTreeMap;

use automerge::{AutoCommit, ChangeHash};

use crate::signed::{Author, DocError, Sig, SignedBy, SignedDoc, hex};
use crate::sync::SigEntry;

/// Version of the document file format written by this build.
pub const DOC_FILE_VERSION: u32 = 1;

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
}

impl SignedDoc {
    /// The document as bytes, labelled with `kind` (such as `kith-pool`).
    pub fn save(&mut self, kind: &str) -> Vec<u8> {
        let file = DocFile {
            version: DOC_FILE_VERSION,
            kind: kind.to_string(),
            id: *self.id(),
            doc: self.doc.save(),
            sigs: self.sigs.iter().map(|(h, s)| SigEntry { hash: h.0, sig: s.clone() }).collect(),
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
        let sigs: BTreeMap<ChangeHash, Sig> =
            file.sigs.into_iter().map(|s| (ChangeHash(s.hash), s.sig)).collect();
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
