//! A STUN binding responder (RFC 5389): enough for ICE to learn its outside address.

use std::net::SocketAddr;

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const XOR_MAPPED_ADDRESS: [u8; 2] = [0x00, 0x20];

/// The success response to a binding request from `from`, or `None` for anything else
/// (other messages are ignored, never answered).
pub fn binding_response(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if req.len() < 20 || req[0..2] != BINDING_REQUEST || req[4..8] != MAGIC {
        return None;
    }
    let attrs_len = u16::from_be_bytes([req[2], req[3]]) as usize;
    if !attrs_len.is_multiple_of(4) || 20 + attrs_len != req.len() {
        return None;
    }
    let txid = &req[8..20];
    let port = from.port() ^ 0x2112;
    let mut attr = Vec::new();
    match from.ip() {
        std::net::IpAddr::V4(ip) => {
            attr.extend_from_slice(&[0, 1]);
            attr.extend_from_slice(&port.to_be_bytes());
            for (b, m) in ip.octets().iter().zip(MAGIC) {
                attr.push(b ^ m);
            }
        }
        std::net::IpAddr::V6(ip) => {
            attr.extend_from_slice(&[0, 2]);
            attr.extend_from_slice(&port.to_be_bytes());
            let key: Vec<u8> = MAGIC.iter().chain(txid).copied().collect();
            for (b, m) in ip.octets().iter().zip(key) {
                attr.push(b ^ m);
            }
        }
    }
    let mut out = Vec::with_capacity(20 + 4 + attr.len());
    out.extend_from_slice(&BINDING_SUCCESS);
    out.extend_from_slice(&((4 + attr.len()) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(txid);
    out.extend_from_slice(&XOR_MAPPED_ADDRESS);
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&attr);
    Some(out)
}
