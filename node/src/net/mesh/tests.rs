use std::net::SocketAddr;

use minicbor::bytes::ByteArray;

use super::*;

fn desc(from: &SecretKey, to: EndpointId, at_ms: u64) -> Description {
    Description {
        from: ByteArray::from(*from.public().as_bytes()),
        to: ByteArray::from(*to.as_bytes()),
        sdp: "v=0".into(),
        at_ms,
        answers: None,
    }
}

#[test]
fn descriptions_open_only_when_signed_by_their_sender_for_us_and_recent() {
    let (a, c, b) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
    let now = crate::keys::now_ms();
    let good = Signed::sign(&a, &desc(&a, c.public(), now));
    assert_eq!(good.open(c.public(), now).unwrap().sdp, "v=0");
    // The neighbour signs an offer in A's name: refused.
    let forged = Signed::sign(&b, &desc(&a, c.public(), now));
    assert!(matches!(forged.open(c.public(), now), Err(SignalError::NotSigned(_))));
    // A byte of the body changed after signing: refused.
    let mut tampered = good.clone();
    let last = tampered.body.len() - 1;
    tampered.body[last] ^= 1;
    assert!(tampered.open(c.public(), now).is_err());
    // For someone else, or stale.
    assert!(matches!(good.open(b.public(), now), Err(SignalError::OtherNode)));
    let old = Signed::sign(&a, &desc(&a, c.public(), now - 11 * 60 * 1000));
    assert!(matches!(old.open(c.public(), now), Err(SignalError::Stale)));
    // Garbage.
    let junk = Signed { body: vec![0xff, 0x00], sig: ByteArray::from([0u8; 64]) };
    assert!(matches!(junk.open(c.public(), now), Err(SignalError::Malformed(_))));
}

#[test]
fn stun_answers_binding_requests_with_the_xored_source() {
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[7u8; 12]);
    let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let r = stun::binding_response(&req, from).unwrap();
    assert_eq!(&r[0..2], &[0x01, 0x01]);
    assert_eq!(&r[8..20], &[7u8; 12]);
    assert_eq!(u16::from_be_bytes([r[2], r[3]]) as usize, r.len() - 20);
    // RFC 5769's example encoding: port 32853 xor 0x2112, address xor the magic cookie.
    assert_eq!(&r[20..22], &[0x00, 0x20]);
    assert_eq!(u16::from_be_bytes([r[26], r[27]]), 32853 ^ 0x2112);
    let ip: Vec<u8> = r[28..32].iter().zip([0x21, 0x12, 0xA4, 0x42]).map(|(a, b)| a ^ b).collect();
    assert_eq!(ip, vec![192, 0, 2, 1]);
    // Not a binding request, truncated, or with a length that lies: no answer.
    assert!(stun::binding_response(&req[..19], from).is_none());
    let mut other = req.clone();
    other[1] = 0x03;
    assert!(stun::binding_response(&other, from).is_none());
    let mut lying = req.clone();
    lying[3] = 8;
    assert!(stun::binding_response(&lying, from).is_none());
}

#[test]
fn signal_frames_round_trip() {
    let a = SecretKey::generate();
    let s = Signal::Incoming { offer: Signed::sign(&a, &desc(&a, a.public(), 1)), stun: 7780 };
    let bytes = minicbor::to_vec(&s).unwrap();
    match minicbor::decode::<Signal>(&bytes).unwrap() {
        Signal::Incoming { offer, stun } => {
            assert_eq!(stun, 7780);
            assert_eq!(minicbor::decode::<Description>(&offer.body).unwrap().at_ms, 1);
        }
        other => panic!("{other:?}"),
    }
}
