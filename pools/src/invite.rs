//! Invites: an admin's signed permission for one or more people to join a pool, and the ticket
//! that carries it with the addresses of the issuing node.

use kith_crdt::{Key, Signer, verify};

/// Domain separation for invite signatures.
const INVITE_CONTEXT: &[u8] = b"kith-invite-v1";
/// Largest encoded invite accepted.
pub const MAX_INVITE_BYTES: usize = 1024;

/// An admin's signed invite.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct Invite {
    /// The pool.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub pool: Key,
    /// Random id, counted against `uses`.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub id: [u8; 16],
    /// The admin who issued it.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub issuer: Key,
    /// Last moment it may be used (ms since the Unix epoch).
    #[n(3)]
    pub expires_ms: u64,
    /// How many people may join with it.
    #[n(4)]
    pub uses: u32,
    /// The issuer's signature over all of the above.
    #[cbor(n(5), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

/// Why an invite is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Not an invite.
    #[error("not a valid invite: {0}")]
    Malformed(String),
    /// For another pool.
    #[error("the invite is for another pool")]
    OtherPool,
    /// The signature does not verify.
    #[error("the invite's signature does not verify (forged or damaged)")]
    Forged,
    /// The issuer is not an admin.
    #[error("the invite was issued by {0}, who is not an admin of the pool")]
    NotAdmin(String),
    /// Expired.
    #[error("the invite expired {0} s before it was used")]
    Expired(u64),
    /// Used up.
    #[error("the invite allowed {0} use(s) and has been used up")]
    UsedUp(u32),
}

impl Invite {
    fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(INVITE_CONTEXT);
        m.extend_from_slice(&self.pool);
        m.extend_from_slice(&self.id);
        m.extend_from_slice(&self.issuer);
        m.extend_from_slice(&self.expires_ms.to_be_bytes());
        m.extend_from_slice(&self.uses.to_be_bytes());
        m
    }

    /// A new signed invite.
    pub fn issue(signer: &Signer, pool: Key, id: [u8; 16], expires_ms: u64, uses: u32) -> Invite {
        let mut inv =
            Invite { pool, id, issuer: signer.author().key, expires_ms, uses, sig: vec![0; 64] };
        inv.sig = signer.sign(&inv.message());
        inv
    }

    /// Whether the signature verifies.
    pub fn signature_ok(&self) -> bool {
        verify(&self.issuer, &self.message(), &self.sig)
    }

    /// Which key of the issuer signed it, if the signature verifies.
    pub fn signed_by(&self) -> Option<kith_crdt::SignedBy> {
        kith_crdt::signed_by(&self.issuer, &self.message(), &self.sig)
    }

    /// Encodes the invite.
    pub fn to_bytes(&self) -> Vec<u8> {
        minicbor::to_vec(self).expect("encoding to a Vec cannot fail")
    }

    /// Decodes an invite, bounded.
    pub fn from_bytes(b: &[u8]) -> Result<Invite, InviteError> {
        if b.len() > MAX_INVITE_BYTES {
            return Err(InviteError::Malformed(format!(
                "{} bytes, limit {MAX_INVITE_BYTES}",
                b.len()
            )));
        }
        minicbor::decode(b).map_err(|e| InviteError::Malformed(e.to_string()))
    }
}
