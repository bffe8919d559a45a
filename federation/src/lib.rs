//! kith federation: agreements in which two pools lend each other capacity (off-site replicas,
//! CDN edges, relaying), the pure core (docs/federation.md).
//!
//! An admin of pool A makes an [`Offer`]: what A lends, at what price, for how long, with what
//! notice, until when it may be taken up, signed. It travels as a `kithfed1…` ticket (a line of
//! text: a chat message, a QR code, a file on a stick). An admin of pool B who takes it up makes
//! an [`Acceptance`]: which pool takes it, what B lends back, when it starts, signed over the
//! offer's hash. The two together are the [`Agreement`], which both pools record in their
//! documents; it travels back as a `kithfedok1…` ticket, so two neighbourhoods that are never
//! online together can federate by carrying two lines of text.
//!
//! What this crate checks alone: the signatures, the offer's expiry, the acceptance naming the
//! offer it signs, a pool not federating with itself, bounds on every field. What needs a pool
//! document (that the signer is an admin of its pool, that an offer was made by this pool and
//! is taken up once) is checked by the pool rules with these types.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use kith_crdt::{Key, Signer, verify};

/// Domain separation of offer signatures.
const OFFER_CONTEXT: &[u8] = b"kith-federation-offer-v1";
/// Domain separation of acceptance signatures.
const ACCEPT_CONTEXT: &[u8] = b"kith-federation-accept-v1";
/// Domain separation of notices.
const NOTICE_CONTEXT: &[u8] = b"kith-federation-notice-v1";
/// Prefix of offer tickets.
pub const OFFER_TICKET_PREFIX: &str = "kithfed1";
/// Prefix of acceptance tickets (an agreement, carried back to the offering pool).
pub const AGREEMENT_TICKET_PREFIX: &str = "kithfedok1";
/// Longest ticket accepted (characters).
pub const MAX_TICKET: usize = 8192;
/// Longest pool name carried.
pub const MAX_NAME: usize = 64;
/// Most contact addresses (node tickets) an offer or acceptance carries, and their length.
pub const MAX_CONTACTS: usize = 8;
/// Longest contact (a node ticket).
pub const MAX_CONTACT: usize = 512;
/// Longest term or notice (days).
pub const MAX_DAYS: u32 = 3650;
/// Version of offers and acceptances.
pub const VERSION: u32 = 1;

/// What one pool lends the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, minicbor::Encode, minicbor::Decode)]
pub struct Lend {
    /// Bytes of storage for the other pool's off-site replicas.
    #[n(0)]
    pub storage: u64,
    /// Bytes a month its nodes send for the other pool (CDN edges, fetches, relaying).
    #[n(1)]
    pub egress: u64,
    /// Whether its nodes serve the other pool's public sites (CDN edges).
    #[n(2)]
    pub cdn: bool,
    /// Whether its relay carries the other pool's traffic.
    #[n(3)]
    pub relay: bool,
}

impl Lend {
    /// Whether it lends nothing at all.
    pub fn is_nothing(&self) -> bool {
        *self == Lend::default()
    }
}

/// What the agreement's lending costs: the same rates both ways, in millionths of the
/// currency the pools settle in. Zero: lending is counted as credit both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, minicbor::Encode, minicbor::Decode)]
pub struct Price {
    /// Per GiB-month of storage held.
    #[n(0)]
    pub storage_per_gib_month: u64,
    /// Per GB sent.
    #[n(1)]
    pub egress_per_gb: u64,
}

/// An admin's signed offer to federate: what its pool lends, on what terms.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct Offer {
    /// [`VERSION`].
    #[n(0)]
    pub v: u32,
    /// A random id: an offer is taken up once.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub id: [u8; 16],
    /// The offering pool.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub pool: Key,
    /// Its name (for people; not trusted).
    #[n(3)]
    pub pool_name: String,
    /// The admin who signs (an identity key).
    #[cbor(n(4), with = "minicbor::bytes")]
    pub by: Key,
    /// What the offering pool lends.
    #[n(5)]
    pub lend: Lend,
    /// The rates, both ways.
    #[n(6)]
    pub price: Price,
    /// The term (days), renewed for as long again unless a side gives notice.
    #[n(7)]
    pub term_days: u32,
    /// Notice a side gives before it leaves (days): what it lent is handed back or re-placed
    /// within it.
    #[n(8)]
    pub notice_days: u32,
    /// Until when it may be taken up (ms since the epoch).
    #[n(9)]
    pub expires_ms: u64,
    /// How to reach the offering pool's nodes: node tickets, and where it lends relay, the
    /// URLs of its relays (`http://…`, see [`relays_in`]).
    #[n(10)]
    pub contact: Vec<String>,
    /// The admin's signature over all of the above.
    #[cbor(n(11), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

/// An admin's signed acceptance of an offer, for its own pool.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct Acceptance {
    /// [`VERSION`].
    #[n(0)]
    pub v: u32,
    /// The hash of the offer it takes up ([`Offer::hash`]).
    #[cbor(n(1), with = "minicbor::bytes")]
    pub offer: Key,
    /// The accepting pool.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub pool: Key,
    /// Its name (for people; not trusted).
    #[n(3)]
    pub pool_name: String,
    /// The admin who signs.
    #[cbor(n(4), with = "minicbor::bytes")]
    pub by: Key,
    /// What the accepting pool lends back.
    #[n(5)]
    pub lend: Lend,
    /// When the agreement starts (ms since the epoch): when it was accepted.
    #[n(6)]
    pub at_ms: u64,
    /// How to reach the accepting pool's nodes (as [`Offer::contact`]).
    #[n(7)]
    pub contact: Vec<String>,
    /// The admin's signature over all of the above.
    #[cbor(n(8), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

/// An offer and its acceptance: what both pools record.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct Agreement {
    /// The offer.
    #[n(0)]
    pub offer: Offer,
    /// Its acceptance.
    #[n(1)]
    pub acceptance: Acceptance,
}

/// An admin's signed notice on an agreement: it ends `notice_days` after `at_ms`. Recorded by
/// the pool that gave it and carried to the partner, which records it too.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct Notice {
    /// The agreement's id.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub agreement: Key,
    /// When notice was given (ms since the epoch).
    #[n(1)]
    pub at_ms: u64,
    /// The admin who gave it.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub by: Key,
    /// Its signature over the above.
    #[cbor(n(3), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

impl Notice {
    /// Notice on agreement `agreement`, given by `signer` at `at_ms`.
    pub fn sign(signer: &Signer, agreement: Key, at_ms: u64) -> Notice {
        let mut n = Notice { agreement, at_ms, by: signer.author().key, sig: Vec::new() };
        n.sig = signer.sign(&message(NOTICE_CONTEXT, &Notice { sig: Vec::new(), ..n.clone() }));
        n
    }

    /// Whether its signature verifies.
    pub fn signature_ok(&self) -> bool {
        verify(
            &self.by,
            &message(NOTICE_CONTEXT, &Notice { sig: Vec::new(), ..self.clone() }),
            &self.sig,
        )
    }

    /// Its bytes (CBOR).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a notice's bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Notice, FedError> {
        minicbor::decode(b).map_err(|_| FedError::Malformed("a damaged federation notice".into()))
    }
}

/// Why an offer, acceptance or ticket is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FedError {
    /// Not a ticket, or a damaged one.
    #[error("{0}")]
    Malformed(String),
    /// A version this kith does not know.
    #[error("the {what} is version {v}; this kith understands version {VERSION}: update kith")]
    Version {
        /// Offer or acceptance.
        what: &'static str,
        /// Its version.
        v: u32,
    },
    /// A signature that does not verify.
    #[error("the {0}'s signature does not verify: it was forged or damaged")]
    Forged(&'static str),
    /// An offer past its time.
    #[error("the federation offer expired {0} s ago: ask its pool's admin for a new ticket")]
    Expired(u64),
    /// An acceptance of another offer.
    #[error("the acceptance is of another offer")]
    OtherOffer,
    /// A pool offering to itself.
    #[error("a pool cannot federate with itself")]
    SamePool,
    /// A roster past its time: its pool's signer has not renewed it.
    #[error(
        "the partner's roster expired {0} s ago: its signer's node has not renewed it (is the agreement still standing?)"
    )]
    RosterExpired(u64),
    /// A field out of its bounds.
    #[error("the {what} is out of bounds: {why}")]
    Bounds {
        /// Offer or acceptance.
        what: &'static str,
        /// Which field, and how.
        why: String,
    },
}

fn encode<T: minicbor::Encode<()>>(t: &T) -> Vec<u8> {
    minicbor::to_vec(t).expect("encoding to a Vec cannot fail")
}

/// What a signature covers: `context` and the record with its signature emptied.
fn message<T: minicbor::Encode<()>>(context: &[u8], unsigned: &T) -> Vec<u8> {
    [context, &encode(unsigned)[..]].concat()
}

fn check_contacts(what: &'static str, c: &[String]) -> Result<(), FedError> {
    if c.len() > MAX_CONTACTS || c.iter().any(|x| x.len() > MAX_CONTACT) {
        return Err(FedError::Bounds {
            what,
            why: format!("at most {MAX_CONTACTS} contacts of {MAX_CONTACT} characters"),
        });
    }
    let urls: Vec<&String> = c.iter().filter(|x| is_url(x)).collect();
    if urls.len() > MAX_RELAYS || urls.iter().any(|u| !relay_url_ok(u)) {
        return Err(FedError::Bounds {
            what,
            why: format!(
                "at most {MAX_RELAYS} relay URLs, each http://IP:PORT of an address nodes may reach (not loopback, link-local, multicast or a host name)"
            ),
        });
    }
    Ok(())
}

/// Relay URLs one side of an agreement may name.
pub const MAX_RELAYS: usize = 2;

/// Whether a contact is a relay URL (the others are node tickets).
fn is_url(c: &str) -> bool {
    c.starts_with("http://") || c.starts_with("https://")
}

/// Whether a relay URL is one kith's nodes may be sent to: `http(s)://IP:PORT` with an
/// optional `/`, the address neither loopback, unspecified, link-local, multicast nor
/// broadcast. No host names (resolving one could leave the LAN), no user, path or query:
/// a partner cannot make a pool's nodes ask anything of a host but a relay's handshake.
pub fn relay_url_ok(c: &str) -> bool {
    let rest = c.strip_prefix("http://").or_else(|| c.strip_prefix("https://"));
    let Some(rest) = rest else { return false };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let Ok(addr) = host.parse::<std::net::SocketAddr>() else { return false };
    let ip = addr.ip().to_canonical();
    let bad = match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        std::net::IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    addr.port() != 0 && !(bad || ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

/// The relay URLs among contacts that [`relay_url_ok`] lets through, at most [`MAX_RELAYS`].
/// They travel with the contacts, which every kith since the first federation carries and
/// signs whatever they hold, so an agreement naming a relay is read by older kith too (which
/// ignores what is not a node ticket).
pub fn relays_in(contacts: &[String]) -> impl Iterator<Item = &str> {
    contacts.iter().map(String::as_str).filter(|c| relay_url_ok(c)).take(MAX_RELAYS)
}

fn check_name(what: &'static str, n: &str) -> Result<(), FedError> {
    if n.is_empty() || n.len() > MAX_NAME || n.chars().any(char::is_control) {
        return Err(FedError::Bounds {
            what,
            why: format!("a pool name is 1 to {MAX_NAME} printable characters"),
        });
    }
    Ok(())
}

impl Offer {
    /// A new offer, signed by `signer` (an admin of `pool`).
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        signer: &Signer,
        id: [u8; 16],
        pool: Key,
        pool_name: &str,
        lend: Lend,
        price: Price,
        term_days: u32,
        notice_days: u32,
        expires_ms: u64,
        contact: Vec<String>,
    ) -> Offer {
        let mut o = Offer {
            v: VERSION,
            id,
            pool,
            pool_name: pool_name.to_string(),
            by: signer.author().key,
            lend,
            price,
            term_days,
            notice_days,
            expires_ms,
            contact,
            sig: Vec::new(),
        };
        o.sig = signer.sign(&message(OFFER_CONTEXT, &Offer { sig: Vec::new(), ..o.clone() }));
        o
    }

    /// Its hash: what an acceptance signs, and the agreement's id.
    pub fn hash(&self) -> Key {
        *blake3::Hasher::new_derive_key("kith federation offer v1")
            .update(&encode(self))
            .finalize()
            .as_bytes()
    }

    /// Checks what the offer alone can show: its version, bounds and signature (by `by`, or
    /// a device `by` certified), and that it has not expired at `now_ms`.
    pub fn check(&self, now_ms: u64) -> Result<(), FedError> {
        if self.v != VERSION {
            return Err(FedError::Version { what: "offer", v: self.v });
        }
        check_name("offer", &self.pool_name)?;
        check_contacts("offer", &self.contact)?;
        if self.term_days == 0 || self.term_days > MAX_DAYS || self.notice_days > MAX_DAYS {
            return Err(FedError::Bounds {
                what: "offer",
                why: format!("a term is 1 to {MAX_DAYS} days, a notice at most {MAX_DAYS}"),
            });
        }
        let unsigned = Offer { sig: Vec::new(), ..self.clone() };
        if !verify(&self.by, &message(OFFER_CONTEXT, &unsigned), &self.sig) {
            return Err(FedError::Forged("offer"));
        }
        if now_ms > self.expires_ms {
            return Err(FedError::Expired((now_ms - self.expires_ms) / 1000));
        }
        Ok(())
    }

    /// As a `kithfed1…` ticket.
    pub fn to_ticket(&self) -> String {
        ticket(OFFER_TICKET_PREFIX, &encode(self))
    }

    /// Reads a `kithfed1…` ticket (not checked: see [`Offer::check`]).
    pub fn from_ticket(s: &str) -> Result<Offer, FedError> {
        let b = unticket(OFFER_TICKET_PREFIX, "federation offer", s)?;
        minicbor::decode(&b).map_err(|_| damaged("federation offer"))
    }

    /// Its bytes (CBOR), as pool documents keep it.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads an offer's bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Offer, FedError> {
        minicbor::decode(b).map_err(|_| damaged("federation offer"))
    }
}

impl Acceptance {
    /// An acceptance of `offer` for `pool`, signed by `signer` (an admin of `pool`).
    pub fn sign(
        signer: &Signer,
        offer: &Offer,
        pool: Key,
        pool_name: &str,
        lend: Lend,
        at_ms: u64,
        contact: Vec<String>,
    ) -> Acceptance {
        let mut a = Acceptance {
            v: VERSION,
            offer: offer.hash(),
            pool,
            pool_name: pool_name.to_string(),
            by: signer.author().key,
            lend,
            at_ms,
            contact,
            sig: Vec::new(),
        };
        a.sig = signer.sign(&message(ACCEPT_CONTEXT, &Acceptance { sig: Vec::new(), ..a.clone() }));
        a
    }
}

impl Agreement {
    /// Checks the whole agreement as far as it can alone: the offer as [`Offer::check`] (at
    /// the acceptance's time: an offer taken up before it expired stays taken up), the
    /// acceptance naming that offer, its bounds and signature, two distinct pools.
    pub fn check(&self) -> Result<(), FedError> {
        let (o, a) = (&self.offer, &self.acceptance);
        o.check(a.at_ms)?;
        if a.v != VERSION {
            return Err(FedError::Version { what: "acceptance", v: a.v });
        }
        if a.offer != o.hash() {
            return Err(FedError::OtherOffer);
        }
        if a.pool == o.pool {
            return Err(FedError::SamePool);
        }
        check_name("acceptance", &a.pool_name)?;
        check_contacts("acceptance", &a.contact)?;
        let unsigned = Acceptance { sig: Vec::new(), ..a.clone() };
        if !verify(&a.by, &message(ACCEPT_CONTEXT, &unsigned), &a.sig) {
            return Err(FedError::Forged("acceptance"));
        }
        Ok(())
    }

    /// Its id: the offer's hash (an offer is taken up once).
    pub fn id(&self) -> Key {
        self.offer.hash()
    }

    /// The other pool, seen from `pool` (`None` if `pool` is in neither side).
    pub fn partner_of(&self, pool: &Key) -> Option<(Key, &str)> {
        if *pool == self.offer.pool {
            Some((self.acceptance.pool, &self.acceptance.pool_name))
        } else if *pool == self.acceptance.pool {
            Some((self.offer.pool, &self.offer.pool_name))
        } else {
            None
        }
    }

    /// The relays `pool`'s nodes use under this agreement (URLs [`relay_url_ok`] lets
    /// through; the caller parses them): those its own side names where it lends relay (its
    /// nodes are found there), and those the partner names where it lends relay, when the
    /// partner made the offer: `pool`'s admin saw the offer when taking it up. A relay the
    /// accepting pool lends back was never shown to the offering pool's admin (an acceptance
    /// is recorded as it comes), so the offering pool's nodes do not go to it by themselves.
    pub fn relays_for(&self, pool: &Key) -> Vec<&str> {
        let (o, a) = (&self.offer, &self.acceptance);
        let sides: [(bool, &[String]); 2] = if *pool == o.pool {
            [(o.lend.relay, &o.contact), (false, &a.contact)]
        } else if *pool == a.pool {
            [(a.lend.relay, &a.contact), (o.lend.relay, &o.contact)]
        } else {
            return Vec::new();
        };
        let mut out: Vec<&str> = Vec::new();
        for url in sides.into_iter().filter(|(lends, _)| *lends).flat_map(|(_, c)| relays_in(c)) {
            if !out.contains(&url) {
                out.push(url);
            }
        }
        out
    }

    /// The relays the partner of `pool` lends it and names, that `pool`'s nodes use (see
    /// [`Agreement::relays_for`]: only an offering partner's) and `pool`'s side does not name
    /// too: what its nodes send through them is counted as taken from the partner.
    pub fn partner_relays_for(&self, pool: &Key) -> Vec<&str> {
        let (o, a) = (&self.offer, &self.acceptance);
        if *pool != a.pool || !o.lend.relay {
            return Vec::new();
        }
        let ours: Vec<&str> = relays_in(&a.contact).collect();
        relays_in(&o.contact).filter(|u| !ours.contains(u)).collect()
    }

    /// What `pool` lends, and what it is lent, in this agreement.
    pub fn lending_of(&self, pool: &Key) -> Option<(Lend, Lend)> {
        if *pool == self.offer.pool {
            Some((self.offer.lend, self.acceptance.lend))
        } else if *pool == self.acceptance.pool {
            Some((self.acceptance.lend, self.offer.lend))
        } else {
            None
        }
    }

    /// As a `kithfedok1…` ticket, for the offering pool.
    pub fn to_ticket(&self) -> String {
        ticket(AGREEMENT_TICKET_PREFIX, &encode(self))
    }

    /// Reads a `kithfedok1…` ticket (not checked: see [`Agreement::check`]).
    pub fn from_ticket(s: &str) -> Result<Agreement, FedError> {
        let b = unticket(AGREEMENT_TICKET_PREFIX, "federation acceptance", s)?;
        minicbor::decode(&b).map_err(|_| damaged("federation acceptance"))
    }

    /// Its bytes (CBOR), as pool documents keep it.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads an agreement's bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Agreement, FedError> {
        minicbor::decode(b).map_err(|_| damaged("federation agreement"))
    }
}

fn ticket(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}{}", data_encoding::BASE32_NOPAD.encode(bytes).to_ascii_lowercase())
}

fn damaged(what: &str) -> FedError {
    FedError::Malformed(format!(
        "this {what} ticket is damaged or incomplete: copy it again, whole"
    ))
}

fn unticket(prefix: &str, what: &str, s: &str) -> Result<Vec<u8>, FedError> {
    let s = s.trim();
    if s.len() > MAX_TICKET {
        return Err(FedError::Malformed(format!(
            "the {what} ticket is {} characters, more than {MAX_TICKET}",
            s.len()
        )));
    }
    let body = s.strip_prefix(prefix).ok_or_else(|| {
        FedError::Malformed(format!("not a {what} ticket (one starts with {prefix})"))
    })?;
    data_encoding::BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|_| damaged(what))
}

#[cfg(test)]
mod tests;

/// Domain separation of rosters.
const ROSTER_CONTEXT: &[u8] = b"kith-federation-roster-v1";
/// Longest a roster is valid: the partner stops honouring one this long after it was signed
/// unless a newer one came (the signer's node renews it halfway).
pub const ROSTER_MS: u64 = 30 * 86_400_000;
/// How far ahead of the checker's clock a roster may have been signed.
pub const MAX_SKEW_MS: u64 = 86_400_000;
/// Most members a roster names.
pub const MAX_ROSTER: usize = 4096;

/// The capability one side of an agreement gives its members to use what the other side lends:
/// "these identities act for pool `pool` in agreement `agreement` until `not_after_ms`", signed
/// by that side's signer of the agreement (the admin who signed the offer or the acceptance).
/// The partner checks it against the agreement alone, without reading the other pool's
/// document; a node proves it is a device of a listed identity as everywhere in kith (the
/// identity's signature over the node, or the device's certified key). Time-limited and renewed
/// while the agreement stands: a removed member drops out of the next one, and nothing is
/// honoured once the agreement has ended (docs/federation.md: why not Meadowcap).
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct Roster {
    /// [`VERSION`].
    #[n(0)]
    pub v: u32,
    /// The agreement's id.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub agreement: Key,
    /// The pool whose members these are (a side of the agreement).
    #[cbor(n(2), with = "minicbor::bytes")]
    pub pool: Key,
    /// Its active members' identity keys, sorted.
    #[n(3)]
    pub members: Vec<minicbor::bytes::ByteArray<32>>,
    /// When it was signed (ms since the epoch): the newest wins.
    #[n(4)]
    pub at_ms: u64,
    /// Until when it may be used (ms since the epoch), at most [`ROSTER_MS`] after `at_ms`.
    #[n(5)]
    pub not_after_ms: u64,
    /// The signer: that side's signer of the agreement.
    #[cbor(n(6), with = "minicbor::bytes")]
    pub by: Key,
    /// Its signature over all of the above.
    #[cbor(n(7), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

impl Roster {
    /// A roster of `members` of `pool` in `agreement`, signed by `signer` at `at_ms`, valid
    /// for [`ROSTER_MS`] (or until `until_ms`, if earlier).
    pub fn sign(
        signer: &Signer,
        agreement: Key,
        pool: Key,
        members: &[Key],
        at_ms: u64,
        until_ms: Option<u64>,
    ) -> Roster {
        let mut m: Vec<Key> = members.to_vec();
        m.sort_unstable();
        m.dedup();
        let not_after_ms = (at_ms + ROSTER_MS).min(until_ms.unwrap_or(u64::MAX));
        let mut r = Roster {
            v: VERSION,
            agreement,
            pool,
            members: m.into_iter().map(Into::into).collect(),
            at_ms,
            not_after_ms,
            by: signer.author().key,
            sig: Vec::new(),
        };
        r.sig = signer.sign(&message(ROSTER_CONTEXT, &Roster { sig: Vec::new(), ..r.clone() }));
        r
    }

    /// Checks it against `agreement` at `now_ms`: its version, bounds and signature, by the
    /// agreement's signer for the side it names, and that it is in force.
    pub fn check(&self, agreement: &Agreement, now_ms: u64) -> Result<(), FedError> {
        if self.v != VERSION {
            return Err(FedError::Version { what: "roster", v: self.v });
        }
        if self.agreement != agreement.id() {
            return Err(FedError::Malformed("the roster is of another agreement".into()));
        }
        let signer = if self.pool == agreement.offer.pool {
            agreement.offer.by
        } else if self.pool == agreement.acceptance.pool {
            agreement.acceptance.by
        } else {
            return Err(FedError::Malformed(
                "the roster names a pool outside the agreement".into(),
            ));
        };
        if self.members.len() > MAX_ROSTER
            || self.not_after_ms > self.at_ms.saturating_add(ROSTER_MS)
            || !self.members.windows(2).all(|w| w[0] < w[1])
        {
            return Err(FedError::Bounds {
                what: "roster",
                why: format!(
                    "at most {MAX_ROSTER} distinct members, sorted, valid at most {} days",
                    ROSTER_MS / 86_400_000
                ),
            });
        }
        if self.by != signer {
            return Err(FedError::Forged("roster"));
        }
        if self.at_ms > now_ms.saturating_add(MAX_SKEW_MS) {
            return Err(FedError::Bounds {
                what: "roster",
                why: "it was signed in the future (a clock far ahead, or a roster made to outlive its renewals)".into(),
            });
        }
        if !verify(
            &self.by,
            &message(ROSTER_CONTEXT, &Roster { sig: Vec::new(), ..self.clone() }),
            &self.sig,
        ) {
            return Err(FedError::Forged("roster"));
        }
        if now_ms > self.not_after_ms {
            return Err(FedError::RosterExpired((now_ms - self.not_after_ms) / 1000));
        }
        Ok(())
    }

    /// Whether it names `member`.
    pub fn names(&self, member: &Key) -> bool {
        self.members.binary_search_by(|m| (**m).cmp(member)).is_ok()
    }

    /// Its bytes (CBOR).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a roster's bytes (not checked: see [`Roster::check`]).
    pub fn from_bytes(b: &[u8]) -> Result<Roster, FedError> {
        minicbor::decode(b).map_err(|_| damaged("federation roster"))
    }
}
