//! Credentials for members-only sites: a member signs, with its identity key, that it may read
//! the sites of a pool until a time. A gateway accepts the credential while the signer is an
//! active member of that pool. Sent as `Authorization: Bearer kithsite1...` or as the cookie
//! `kith_access=kithsite1...`.

use actix_web::HttpRequest;
use actix_web::http::header;
use kith_crdt::{Key, SignedBy, Signer, signed_by};
use kith_pools::PoolView;
use minicbor::{Decode, Encode};

/// Prefix of a credential.
pub const PREFIX: &str = "kithsite1";
/// Domain separation of the signature.
const CONTEXT: &[u8] = b"kith-site-access-v1";
/// Longest credential accepted.
const MAX_LEN: usize = 512;

#[derive(Debug, Clone, Encode, Decode)]
#[cbor(array)]
struct Body {
    #[cbor(n(0), with = "minicbor::bytes")]
    member: Key,
    #[cbor(n(1), with = "minicbor::bytes")]
    pool: Key,
    #[n(2)]
    expires_ms: u64,
    #[cbor(n(3), with = "minicbor::bytes")]
    sig: Vec<u8>,
}

fn message(member: &Key, pool: &Key, expires_ms: u64) -> Vec<u8> {
    [CONTEXT, &member[..], &pool[..], &expires_ms.to_le_bytes()[..]].concat()
}

/// Makes a credential for `signer`'s identity to read `pool`'s sites until `expires_ms`.
pub fn issue(signer: &Signer, pool: &Key, expires_ms: u64) -> String {
    let member = signer.author().key;
    let body = Body {
        member,
        pool: *pool,
        expires_ms,
        sig: signer.sign(&message(&member, pool, expires_ms)),
    };
    let bytes = minicbor::to_vec(&body).expect("encoding to a Vec cannot fail");
    format!("{PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase())
}

/// Checks a credential for `pool` at `now_ms`: the member who signed it.
pub fn check(
    token: &str,
    pool: &Key,
    view: &PoolView,
    now_ms: u64,
) -> Result<Key, CredentialError> {
    let token = token.trim();
    if token.len() > MAX_LEN {
        return Err(CredentialError::TooLong);
    }
    let b32 = token.strip_prefix(PREFIX).ok_or(CredentialError::NotACredential)?;
    let bytes = data_encoding::BASE32_NOPAD
        .decode(b32.to_ascii_uppercase().as_bytes())
        .map_err(|_| CredentialError::Damaged)?;
    let body: Body = minicbor::decode(&bytes).map_err(|_| CredentialError::Damaged)?;
    if body.pool != *pool {
        return Err(CredentialError::OtherPool);
    }
    let msg = message(&body.member, &body.pool, body.expires_ms);
    let by = signed_by(&body.member, &msg, &body.sig).ok_or(CredentialError::BadSignature)?;
    if now_ms > body.expires_ms {
        return Err(CredentialError::Expired);
    }
    let member = view.active(&body.member).ok_or(CredentialError::NotActive)?;
    if let SignedBy::Device(d) = by
        && member.retired.contains_key(&d)
    {
        return Err(CredentialError::RetiredDevice);
    }
    Ok(body.member)
}

/// Why a site credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Longer than any credential.
    #[error("the credential is too long")]
    TooLong,
    /// Not a kith credential at all.
    #[error("that is not a kith site credential")]
    NotACredential,
    /// Not valid base32 or CBOR.
    #[error("the credential is damaged")]
    Damaged,
    /// Issued for another pool.
    #[error("the credential is for another pool")]
    OtherPool,
    /// The signature does not verify.
    #[error("the credential's signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("the credential has expired")]
    Expired,
    /// Its member is not an active member of the pool (left or removed).
    #[error("the credential's member is not an active member of the pool")]
    NotActive,
    /// The request carries none.
    #[error("no credential was sent")]
    Missing,
    /// Made on a device its member retired.
    #[error("the credential was made on a device its member retired")]
    RetiredDevice,
}

/// Checks the credential a request carries, if any, at `now_ms`.
pub fn check_request(
    req: &HttpRequest,
    pool: &Key,
    view: &PoolView,
    now_ms: u64,
) -> Result<Key, CredentialError> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("kith_access=").map(str::to_string));
    let token = bearer.map(str::to_string).or(cookie).ok_or(CredentialError::Missing)?;
    check(&token, pool, view, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_pools::Pool;

    #[test]
    fn credentials_verify_expire_and_stay_in_their_pool() {
        let a = Signer::new(&[1; 32], [11; 32]);
        let x = Signer::new(&[9; 32], [19; 32]);
        let p = Pool::create(&a, "ada", Pool::charter("street"), 1).unwrap();
        let (id, v) = (p.id(), p.view());
        let t = issue(&a, &id, 1_000);
        assert_eq!(check(&t, &id, &v, 999).unwrap(), a.author().key);
        assert!(check(&t, &id, &v, 1_001).unwrap_err() == CredentialError::Expired);
        assert!(check(&t, &[7; 32], &v, 1).unwrap_err() == CredentialError::OtherPool);
        let outsider = issue(&x, &id, 1_000);
        assert!(check(&outsider, &id, &v, 1).unwrap_err() == CredentialError::NotActive);
        // A changed byte breaks the signature or the encoding.
        let mut forged = t.clone().into_bytes();
        let i = forged.len() - 5;
        forged[i] = if forged[i] == b'a' { b'b' } else { b'a' };
        assert!(check(std::str::from_utf8(&forged).unwrap(), &id, &v, 1).is_err());
        assert!(check("nonsense", &id, &v, 1).is_err());
        assert!(
            check(&"kithsite1".repeat(100), &id, &v, 1).unwrap_err() == CredentialError::TooLong
        );
    }
}
