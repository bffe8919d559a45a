//! Node tickets: a node id and its addresses in one copyable string, for peers that mDNS
//! cannot see (another subnet, a VPN).
//!
//! `kith1` followed by lowercase base32 (no padding) of CBOR `[version = 1, id: bytes(32),
//! [address: text, ...]]`.

use std::net::SocketAddr;
use std::str::FromStr;

use iroh::EndpointId;
use minicbor::{Decode, Encode};

const PREFIX: &str = "kith1";
const VERSION: u32 = 1;
/// Longest ticket accepted (a ticket with a dozen addresses is under 400 characters).
pub const MAX_TICKET_LEN: usize = 2048;
const MAX_ADDRS: usize = 16;

/// A node and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTicket {
    /// The node.
    pub id: EndpointId,
    /// Its direct addresses.
    pub addrs: Vec<SocketAddr>,
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct Wire {
    #[n(0)]
    version: u32,
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    id: [u8; 32],
    #[n(2)]
    addrs: Vec<String>,
}

/// Why a string is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not `kith1...`.
    #[error("not a kith node ticket (it should start with \"{PREFIX}\")")]
    Prefix,
    /// Too long to be a ticket.
    #[error("the ticket is longer than {MAX_TICKET_LEN} characters")]
    TooLong,
    /// Damaged: bad base32, CBOR, key or address (what the decoder said is kept, not shown).
    #[error(
        "this ticket is damaged or incomplete: copy it again, whole (`kith id --ticket` on the other node prints it)"
    )]
    Damaged(String),
    /// From a newer kith.
    #[error("ticket version {0} is newer than this kith reads: upgrade kith")]
    Version(u32),
}

impl std::fmt::Display for NodeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wire = Wire {
            version: VERSION,
            id: *self.id.as_bytes(),
            addrs: self.addrs.iter().take(MAX_ADDRS).map(|a| a.to_string()).collect(),
        };
        let bytes = minicbor::to_vec(&wire).expect("encoding into a Vec cannot fail");
        let text = data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
        write!(f, "{PREFIX}{text}")
    }
}

impl FromStr for NodeTicket {
    type Err = TicketError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong);
        }
        let body = s.strip_prefix(PREFIX).ok_or(TicketError::Prefix)?;
        let damaged = |e: &dyn std::fmt::Display| TicketError::Damaged(e.to_string());
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|e| damaged(&e))?;
        let wire: Wire = minicbor::decode(&bytes).map_err(|e| damaged(&e))?;
        if wire.version != VERSION {
            return Err(TicketError::Version(wire.version));
        }
        let id = EndpointId::from_bytes(&wire.id).map_err(|e| damaged(&e))?;
        if wire.addrs.len() > MAX_ADDRS {
            return Err(TicketError::Damaged("too many addresses".into()));
        }
        let addrs = wire
            .addrs
            .iter()
            .map(|a| a.parse().map_err(|e| damaged(&e)))
            .collect::<Result<_, _>>()?;
        Ok(NodeTicket { id, addrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_damage_is_named() {
        let t = NodeTicket {
            id: iroh::SecretKey::generate().public(),
            addrs: vec!["10.0.0.2:7781".parse().unwrap(), "[fe80::1]:7781".parse().unwrap()],
        };
        let s = t.to_string();
        assert!(s.starts_with("kith1"));
        assert_eq!(s.parse::<NodeTicket>().unwrap(), t);
        assert_eq!("hello".parse::<NodeTicket>(), Err(TicketError::Prefix));
        let mut cut = s.clone();
        cut.truncate(s.len() - 5);
        assert!(matches!(cut.parse::<NodeTicket>(), Err(TicketError::Damaged(_))));
        assert_eq!("kith1".repeat(500).parse::<NodeTicket>(), Err(TicketError::TooLong));
    }
}
