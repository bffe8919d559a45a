//! What ICE needs to find a path: the address the neighbour is reached at, the local address
//! facing it, its STUN responder's URL, and the end of candidate gathering.

use std::net::{IpAddr, SocketAddr};

use iroh::TransportAddr;
use iroh::endpoint::Connection;

use super::GATHER_TIMEOUT;
use crate::net::rtc::Events;

/// The IP address the selected path of `conn` reaches the other side at.
pub(super) fn remote_ip(conn: &Connection) -> Option<IpAddr> {
    let paths = conn.paths();
    let mut any = None;
    for p in paths.iter() {
        if let TransportAddr::Ip(a) = p.remote_addr() {
            if p.is_selected() {
                return Some(a.ip());
            }
            any = Some(a.ip());
        }
    }
    any
}

/// The local address packets to `to` leave from (a routing lookup; nothing is sent).
pub(super) fn local_ip_towards(to: IpAddr) -> SocketAddr {
    let any: SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect((to, 9))?;
            s.local_addr()
        })
        .map(|a| SocketAddr::new(a.ip(), 0))
        .unwrap_or(any)
}

pub(super) fn stun_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("stun:{v4}:{port}"),
        IpAddr::V6(v6) => format!("stun:[{v6}]:{port}"),
    }
}

/// Waits for candidate gathering to end (or its time to run out: a STUN server that does not
/// answer leaves the host candidates).
pub(super) async fn gather(events: &mut Events) {
    let _ = tokio::time::timeout(GATHER_TIMEOUT, events.gathered.recv()).await;
}
