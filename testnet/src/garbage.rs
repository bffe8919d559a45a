//! A peer that sends garbage on every protocol a node speaks: its iroh protocols (blobs, pool
//! replication, document sync, mesh signalling, and one it does not know), raw UDP datagrams
//! at its QUIC and mDNS ports, and HTTP requests that are not HTTP at the site gateway. Used
//! by [`chaos`](crate::chaos) for a while during a run; the nodes must stay up, answer
//! nothing they should not, and lose nothing.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use iroh::endpoint::presets;
use iroh::{Endpoint, EndpointAddr, RelayMode, TransportAddr};
use kith_node::net::ticket::NodeTicket;
use serde::Serialize;

use crate::chaos::Rng;

/// The protocols a garbage peer opens streams on.
const ALPNS: [&[u8]; 5] = [
    kith_node::net::blobs::ALPN,
    kith_pools::replica::POOL_ALPN,
    kith_pools::docs::DOCS_ALPN,
    kith_node::net::mesh::SIGNAL_ALPN,
    b"kith/garbage/9",
];

/// What a garbage peer sent.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Sent {
    /// Streams opened on iroh connections (each with one kind of garbage).
    pub streams: u64,
    /// Connections a node refused or that failed.
    pub refused: u64,
    /// Bytes that came back (error frames and the like).
    pub answered_bytes: u64,
    /// UDP datagrams sent to QUIC and mDNS ports.
    pub datagrams: u64,
    /// HTTP requests that were not HTTP.
    pub http: u64,
}

/// Sends garbage from namespace `ns` to the nodes of `tickets` (with their site gateways at
/// `http`) for `for_s`, drawn from `seed`. Blocks until done.
pub fn run(
    ns: &str,
    tickets: Vec<String>,
    http: Vec<SocketAddr>,
    for_s: u64,
    seed: u64,
) -> Result<Sent> {
    let targets: Vec<NodeTicket> = tickets
        .iter()
        .map(|t| t.trim().parse().map_err(|e| anyhow::anyhow!("ticket {t}: {e:?}")))
        .collect::<Result<_>>()?;
    crate::netns::on_ns_thread(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(send_all(targets, http, Duration::from_secs(for_s), seed))
    })?
}

/// One stream's worth of garbage.
fn garbage(r: &mut Rng) -> Vec<u8> {
    match r.below(6) {
        // Noise.
        0 => {
            let n = r.below(4096) as usize;
            r.bytes(n)
        }
        // A frame announcing more than any frame may be.
        1 => {
            let mut b = u32::MAX.to_le_bytes().to_vec();
            b.extend(r.bytes(64));
            b
        }
        // A frame of the right shape whose body is noise.
        2 => {
            let n = r.below(2048) as usize;
            let mut b = (n as u32).to_le_bytes().to_vec();
            b.extend(r.bytes(n));
            b
        }
        // A frame cut short.
        3 => {
            let mut b = 1000u32.to_le_bytes().to_vec();
            b.extend(r.bytes(100));
            b
        }
        // CBOR that nests deeper than any message.
        4 => {
            let mut b = Vec::new();
            let depth = 4000;
            let mut body = vec![0x81; depth];
            body.push(0x00);
            b.extend((body.len() as u32).to_le_bytes());
            b.extend(body);
            b
        }
        // A CBOR map claiming billions of entries.
        _ => {
            let body = [0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
            let mut b = (body.len() as u32).to_le_bytes().to_vec();
            b.extend(body);
            b
        }
    }
}

async fn send_all(
    targets: Vec<NodeTicket>,
    http: Vec<SocketAddr>,
    for_s: Duration,
    seed: u64,
) -> Result<Sent> {
    let ep = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .bind_addr("0.0.0.0:0")?
        .bind()
        .await
        .context("bind the garbage peer")?;
    let udp = UdpSocket::bind("0.0.0.0:0")?;
    let mut r = Rng(seed);
    let mut sent = Sent::default();
    let end = Instant::now() + for_s;
    while Instant::now() < end && !targets.is_empty() {
        let t = &targets[r.below(targets.len() as u64) as usize];
        let alpn = ALPNS[r.below(ALPNS.len() as u64) as usize];
        let addr = EndpointAddr::from_parts(t.id, t.addrs.iter().copied().map(TransportAddr::Ip));
        match tokio::time::timeout(Duration::from_secs(5), ep.connect(addr, alpn)).await {
            Ok(Ok(conn)) => {
                // A few streams on the connection, each its own garbage.
                for _ in 0..1 + r.below(4) {
                    let Ok(Ok((mut send, mut recv))) =
                        tokio::time::timeout(Duration::from_secs(2), conn.open_bi()).await
                    else {
                        break;
                    };
                    sent.streams += 1;
                    let _ = send.write_all(&garbage(&mut r)).await;
                    let _ = send.finish();
                    if let Ok(Ok(b)) =
                        tokio::time::timeout(Duration::from_secs(2), recv.read_to_end(1 << 16))
                            .await
                    {
                        sent.answered_bytes += b.len() as u64;
                    }
                }
                conn.close(0u32.into(), b"bye");
            }
            _ => sent.refused += 1,
        }
        // Datagrams that are not QUIC at the node's endpoint, and not DNS at its mDNS port.
        for a in &t.addrs {
            let n = r.below(1400) as usize;
            let _ = udp.send_to(&r.bytes(n), a);
            let _ = udp.send_to(&r.bytes(n.min(512)), SocketAddr::new(a.ip(), 5353));
            sent.datagrams += 2;
        }
        // Requests that are not HTTP at a gateway.
        if !http.is_empty() {
            let at = http[r.below(http.len() as u64) as usize];
            let junk = match r.below(3) {
                0 => {
                    let n = r.below(2048) as usize;
                    r.bytes(n)
                }
                1 => format!(
                    "GET /{} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                    "a/".repeat(3000)
                )
                .into_bytes(),
                _ => {
                    b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\nRange: bytes=99-1,-0,--5\r\n\r\n".to_vec()
                }
            };
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(at))
                    .await
            {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = s.write_all(&junk).await;
                let _ = s.shutdown().await;
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
                sent.http += 1;
            }
        }
    }
    ep.close().await;
    Ok(sent)
}
