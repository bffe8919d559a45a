//! Credentials for members-only sites: a member signs, with its identity key, that it may read
//! the sites of a pool until a time. A gateway accepts the credential while the signer is an
//! active member of that pool. Sent as `Authorization: Bearer kithsite1...` or as the cookie
//! `kith_access=kithsite1...`.

use actix_web::HttpRequest;
use actix_web::http::header;
use kith_crdt::{Key, Signer, verify};
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
    sig: [u8; 64],
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
pub fn check(token: &str, pool: &Key, view: &PoolView, now_ms: u64) -> Result<Key, String> {
    let token = token.trim();
    if token.len() > MAX_LEN {
        return Err("the credential is too long".into());
    }
    let b32 = token.strip_prefix(PREFIX).ok_or("that is not a kith site credential")?;
    let bytes = data_encoding::BASE32_NOPAD
        .decode(b32.to_ascii_uppercase().as_bytes())
        .map_err(|_| "the credential is damaged")?;
    let body: Body = minicbor::decode(&bytes).map_err(|_| "the credential is damaged")?;
    if body.pool != *pool {
        return Err("the credential is for another pool".into());
    }
    if !verify(&body.member, &message(&body.member, &body.pool, body.expires_ms), &body.sig) {
        return Err("the credential's signature does not verify".into());
    }
    if now_ms > body.expires_ms {
        return Err("the credential has expired".into());
    }
    if view.active(&body.member).is_none() {
        return Err("the credential's member is not an active member of the pool".into());
    }
    Ok(body.member)
}

/// Checks the credential a request carries, if any, at `now_ms`.
pub fn check_request(
    req: &HttpRequest,
    pool: &Key,
    view: &PoolView,
    now_ms: u64,
) -> Result<Key, String> {
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
    let token = bearer.map(str::to_string).or(cookie).ok_or("no credential was sent")?;
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
        assert!(check(&t, &id, &v, 1_001).unwrap_err().contains("expired"));
        assert!(check(&t, &[7; 32], &v, 1).unwrap_err().contains("another pool"));
        let outsider = issue(&x, &id, 1_000);
        assert!(check(&outsider, &id, &v, 1).unwrap_err().contains("not an active member"));
        // A changed byte breaks the signature or the encoding.
        let mut forged = t.clone().into_bytes();
        let i = forged.len() - 5;
        forged[i] = if forged[i] == b'a' { b'b' } else { b'a' };
        assert!(check(std::str::from_utf8(&forged).unwrap(), &id, &v, 1).is_err());
        assert!(check("nonsense", &id, &v, 1).is_err());
        assert!(check(&"kithsite1".repeat(100), &id, &v, 1).unwrap_err().contains("too long"));
    }
}
