//! A delayed link (testnet's stand-in for `netem`, which this kernel lacks): every datagram
//! arrives, none sooner than the delay, some after later ones; and the link is as before once
//! the delay stops.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use kith_testnet::delay;
use kith_testnet::netns::{Lan, on_ns_thread};

/// Few enough that every echo fits in the sender's receive buffer before it reads them.
const N: u32 = 150;

/// Sends `N` numbered datagrams from namespace `from` to an echo in `to`; gives the numbers in
/// the order the echoes came back and the shortest round trip.
fn exchange(lan: &Lan, from: usize, to: usize) -> (Vec<u32>, Duration) {
    let echo_at = SocketAddr::new(lan.ip(to).into(), 9999);
    let ns = lan.ns(to).to_string();
    let echo = std::thread::spawn(move || {
        on_ns_thread(&ns, move || {
            let s = UdpSocket::bind(echo_at).unwrap();
            // Until the sender has been quiet for a while.
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 64];
            while let Ok((n, peer)) = s.recv_from(&mut buf) {
                s.send_to(&buf[..n], peer).unwrap();
            }
        })
        .unwrap()
    });
    let ns = lan.ns(from).to_string();
    let got = on_ns_thread(&ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        // The echo binds on its own thread: wait until it answers, asking again well within
        // the time it waits for a first datagram.
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 64];
        let mut sent = Vec::new();
        for i in 0..N {
            // Timed before it is sent: the delay starts when the link takes it.
            sent.push(Instant::now());
            s.send_to(&i.to_le_bytes(), echo_at).unwrap();
            if i == 0 {
                while s.recv_from(&mut buf).is_err() {
                    assert!(Instant::now() < deadline, "no echo from {echo_at}");
                    sent[0] = Instant::now();
                    s.send_to(&0u32.to_le_bytes(), echo_at).unwrap();
                }
            }
            if i == 0 {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            }
            // Paced a little, so the jitter (not the send order) decides the arrival order.
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut order = Vec::new();
        let mut shortest = Duration::MAX;
        while order.len() < N as usize - 1 {
            let Ok((n, _)) = s.recv_from(&mut buf) else { break };
            let i = u32::from_le_bytes(buf[..n].try_into().unwrap());
            shortest = shortest.min(sent[i as usize].elapsed());
            order.push(i);
        }
        (order, shortest)
    })
    .unwrap();
    echo.join().unwrap();
    got
}

#[test]
fn a_delayed_link_holds_and_reorders_every_packet_and_comes_back_as_it_was() {
    let lan = Lan::new(2).unwrap();
    let link =
        delay::start(lan.ns(0), lan.ip(0), Duration::from_millis(40), Duration::from_millis(20), 7)
            .unwrap();
    let (order, shortest) = exchange(&lan, 0, 1);
    assert_eq!(order.len(), N as usize - 1, "every datagram came back: {order:?}");
    // A lower bound by construction (each is held at least the delay), not a speed.
    assert!(shortest >= Duration::from_millis(40), "a round trip of {shortest:?}");
    let overtaken = order.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(overtaken > 0, "nothing was reordered: {order:?}");
    let carried = link.stop().unwrap();
    assert!(carried.packets >= N as u64 - 1, "{carried:?}");
    assert!(carried.reordered > 0, "{carried:?}");
    // Put back: the same exchange, in order.
    let (order, _) = exchange(&lan, 0, 1);
    assert_eq!(order.len(), N as usize - 1);
    assert!(order.windows(2).all(|w| w[1] > w[0]), "reordered without a delay: {order:?}");
}
