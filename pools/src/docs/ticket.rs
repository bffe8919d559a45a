//! Pool tickets: an invite and how to reach the node that issued it, as one line of text.

use kith_node::net::ticket::NodeTicket;

use crate::error::ParseError;
use crate::invite::Invite;

/// Prefix of pool tickets.
pub const POOL_TICKET_PREFIX: &str = "kithpool1";
/// Longest pool ticket accepted.
const MAX_POOL_TICKET: usize = 4096;

/// A pool ticket: an invite and how to reach the node that issued it.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
struct TicketBody {
    #[cbor(n(0), with = "minicbor::bytes")]
    invite: Vec<u8>,
    #[n(1)]
    node: String,
}

/// Encodes a pool ticket.
pub fn encode_ticket(invite: &Invite, node: &NodeTicket) -> String {
    let body = TicketBody { invite: invite.to_bytes(), node: node.to_string() };
    let bytes = minicbor::to_vec(&body).expect("encoding to a Vec cannot fail");
    format!(
        "{POOL_TICKET_PREFIX}{}",
        data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
    )
}

/// Decodes a pool ticket.
pub fn decode_ticket(s: &str) -> Result<(Invite, NodeTicket), ParseError> {
    let s = s.trim();
    let bad = |m: String| ParseError::new("pool ticket", s, m);
    if s.len() > MAX_POOL_TICKET {
        return Err(bad(format!(
            "the ticket is {} characters, more than {MAX_POOL_TICKET}",
            s.len()
        )));
    }
    let body = s.strip_prefix(POOL_TICKET_PREFIX).ok_or_else(|| {
        bad(format!("not a pool ticket (it should start with {POOL_TICKET_PREFIX})"))
    })?;
    let damaged = |_| {
        bad("this ticket is damaged or incomplete: copy it again, whole (`kith pool invite` \
             prints it)"
            .to_string())
    };
    let bytes =
        data_encoding::BASE32_NOPAD.decode(body.to_ascii_uppercase().as_bytes()).map_err(|e| {
            tracing::debug!(error = %e, "pool ticket: bad base32");
            damaged(())
        })?;
    let t: TicketBody = minicbor::decode(&bytes).map_err(|e| {
        tracing::debug!(error = %e, "pool ticket: bad CBOR");
        damaged(())
    })?;
    let invite = Invite::from_bytes(&t.invite).map_err(|_| damaged(()))?;
    let node: NodeTicket = t.node.parse().map_err(|_| damaged(()))?;
    Ok((invite, node))
}
