//! Offers, acceptances and tickets, and every way they are refused.

use super::*;

const NOW: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;

fn admin(n: u8) -> Signer {
    Signer::new(&[n; 32], [0; 32])
}

fn offer(by: &Signer) -> Offer {
    Offer::sign(
        by,
        [9; 16],
        [1; 32],
        "street",
        Lend { storage: 200 << 30, egress: 50_000_000_000, cdn: true, relay: true },
        Price::default(),
        365,
        30,
        NOW + 7 * DAY,
        vec!["kithnode1example".into()],
    )
}

#[test]
fn an_offer_and_its_acceptance_travel_as_tickets_and_check() {
    let (ada, bea) = (admin(1), admin(2));
    let o = offer(&ada);
    o.check(NOW).unwrap();
    let t = o.to_ticket();
    assert!(t.starts_with("kithfed1") && t.len() < 600, "{} characters", t.len());
    let back = Offer::from_ticket(&format!("  {t}\n")).unwrap();
    assert_eq!(back, o);
    let lend = Lend { storage: 100 << 30, ..Default::default() };
    let a = Acceptance::sign(&bea, &back, [2; 32], "hill", lend, NOW + DAY, vec![]);
    let ag = Agreement { offer: back, acceptance: a };
    ag.check().unwrap();
    let t = ag.to_ticket();
    assert!(t.starts_with("kithfedok1"));
    let back = Agreement::from_ticket(&t).unwrap();
    assert_eq!(back, ag);
    assert_eq!(back.id(), o.hash());
    assert_eq!(back.partner_of(&[1; 32]), Some(([2; 32], "hill")));
    assert_eq!(back.lending_of(&[2; 32]), Some((lend, o.lend)));
    assert_eq!(back.partner_of(&[3; 32]), None);
    // Each ticket is refused where the other is expected.
    assert!(Offer::from_ticket(&t).is_err());
    assert!(Agreement::from_ticket(&o.to_ticket()).is_err());
}

#[test]
fn forged_expired_damaged_and_foreign_tickets_are_refused_with_why() {
    let (ada, bea, mallory) = (admin(1), admin(2), admin(3));
    let o = offer(&ada);
    // Expired.
    let e = o.check(NOW + 8 * DAY).unwrap_err();
    assert!(e.to_string().contains("expired 86400 s ago"), "{e}");
    // Changed after signing: more storage than ada offered.
    let mut more = o.clone();
    more.lend.storage *= 10;
    assert_eq!(more.check(NOW), Err(FedError::Forged("offer")));
    // Signed by someone else in ada's name.
    let mut forged = offer(&mallory);
    forged.by = ada.author().key;
    assert_eq!(forged.check(NOW), Err(FedError::Forged("offer")));
    // Damaged, truncated, too long, not a ticket, another version.
    let t = o.to_ticket();
    for bad in [&t[..t.len() - 7], "kithfed1!!!!", "kithpool1abc", ""] {
        assert!(matches!(Offer::from_ticket(bad), Err(FedError::Malformed(_))), "{bad}");
    }
    let long = format!("kithfed1{}", "a".repeat(MAX_TICKET));
    assert!(Offer::from_ticket(&long).unwrap_err().to_string().contains("more than"));
    let v2 = Offer { v: 2, ..o.clone() };
    assert!(v2.check(NOW).unwrap_err().to_string().contains("version 2"));
    // Out of bounds, even when signed.
    let huge = Offer::sign(
        &ada,
        [1; 16],
        [1; 32],
        &"x".repeat(65),
        Lend::default(),
        Price::default(),
        365,
        30,
        NOW + DAY,
        vec![],
    );
    assert!(matches!(huge.check(NOW), Err(FedError::Bounds { .. })));
    // An acceptance: of another offer, by a pool of itself, forged, after the offer expired.
    let other = offer(&bea);
    let a = Acceptance::sign(&bea, &other, [2; 32], "hill", Lend::default(), NOW, vec![]);
    let ag = Agreement { offer: o.clone(), acceptance: a };
    assert_eq!(ag.check(), Err(FedError::OtherOffer));
    let a = Acceptance::sign(&bea, &o, [1; 32], "street", Lend::default(), NOW, vec![]);
    assert_eq!(Agreement { offer: o.clone(), acceptance: a }.check(), Err(FedError::SamePool));
    let mut a = Acceptance::sign(&bea, &o, [2; 32], "hill", Lend::default(), NOW, vec![]);
    a.lend.storage = 1;
    let e = Agreement { offer: o.clone(), acceptance: a }.check().unwrap_err();
    assert_eq!(e, FedError::Forged("acceptance"));
    let late = Acceptance::sign(&bea, &o, [2; 32], "hill", Lend::default(), NOW + 8 * DAY, vec![]);
    let e = Agreement { offer: o, acceptance: late }.check().unwrap_err();
    assert!(matches!(e, FedError::Expired(_)), "{e}");
}

#[test]
fn a_roster_is_the_capability_the_partner_checks_alone_and_it_runs_out() {
    let (ada, bea, mallory) = (admin(1), admin(2), admin(3));
    let o = offer(&ada);
    let a = Acceptance::sign(&bea, &o, [2; 32], "hill", Lend::default(), NOW, vec![]);
    let ag = Agreement { offer: o, acceptance: a };
    let (m1, m2, stranger) = ([7; 32], [5; 32], [6; 32]);
    // Street's signer vouches for street's members; hill's nodes check it with the agreement.
    let r = Roster::sign(&ada, ag.id(), [1; 32], &[m1, m2, m1], NOW, None);
    r.check(&ag, NOW + DAY).unwrap();
    assert!(r.names(&m1) && r.names(&m2) && !r.names(&stranger));
    assert_eq!(r.members.len(), 2, "sorted and deduplicated");
    let back = Roster::from_bytes(&r.to_bytes()).unwrap();
    assert_eq!(back, r);
    // It runs out unless renewed, and never outlives the end it was given.
    let e = r.check(&ag, NOW + ROSTER_MS + 1000).unwrap_err();
    assert!(e.to_string().contains("expired 1 s ago"), "{e}");
    let short = Roster::sign(&ada, ag.id(), [1; 32], &[m1], NOW, Some(NOW + DAY));
    assert!(short.check(&ag, NOW + 2 * DAY).is_err());
    // Only that side's signer: not the other side's, not a stranger's, not for a third pool.
    let e = Roster::sign(&bea, ag.id(), [1; 32], &[m1], NOW, None).check(&ag, NOW).unwrap_err();
    assert_eq!(e, FedError::Forged("roster"));
    let e = Roster::sign(&mallory, ag.id(), [2; 32], &[m1], NOW, None).check(&ag, NOW).unwrap_err();
    assert_eq!(e, FedError::Forged("roster"));
    assert!(Roster::sign(&ada, ag.id(), [3; 32], &[m1], NOW, None).check(&ag, NOW).is_err());
    // Changed after signing: a stranger added.
    let mut forged = r.clone();
    forged.members.push(stranger.into());
    forged.members.sort();
    assert_eq!(forged.check(&ag, NOW).unwrap_err(), FedError::Forged("roster"));
    // Stretched past its bounds.
    let mut long = r.clone();
    long.not_after_ms = NOW + 2 * ROSTER_MS;
    assert!(matches!(long.check(&ag, NOW).unwrap_err(), FedError::Bounds { .. }));
    // Signed in the future, to outlive every renewal: refused.
    let ahead = Roster::sign(&ada, ag.id(), [1; 32], &[m1], NOW + 30 * DAY, None);
    assert!(matches!(ahead.check(&ag, NOW).unwrap_err(), FedError::Bounds { .. }));
    // Of another agreement; damaged bytes.
    let other = Roster::sign(&ada, [8; 32], [1; 32], &[m1], NOW, None);
    assert!(other.check(&ag, NOW).is_err());
    assert!(Roster::from_bytes(&r.to_bytes()[..20]).is_err());
}

#[test]
fn the_relays_an_agreement_names_are_those_of_the_sides_that_lend_relay_and_were_seen() {
    let (ada, bea) = (admin(1), admin(2));
    let (street, hill) = ([1; 32], [2; 32]);
    // Street lends its relay and names it among its contacts; the URL is signed with them.
    let resign = |o: &Offer, lend: Lend, contact: Vec<String>| {
        Offer::sign(
            &ada,
            o.id,
            o.pool,
            &o.pool_name,
            lend,
            o.price,
            o.term_days,
            o.notice_days,
            o.expires_ms,
            contact,
        )
    };
    let base = offer(&ada);
    let mut contact = base.contact.clone();
    contact.push("http://203.0.113.7:7790".into());
    let o = resign(&base, base.lend, contact);
    o.check(NOW).unwrap();
    let mut moved = o.clone();
    moved.contact[1] = "http://198.51.100.9:7790".into();
    assert_eq!(moved.check(NOW), Err(FedError::Forged("offer")));
    // Hill lends no relay: a URL among its contacts is not used.
    let accept = |lend: Lend| {
        let c = vec!["kithnode1hill".into(), "https://198.51.100.9:443/".into()];
        Acceptance::sign(&bea, &o, hill, "hill", lend, NOW, c)
    };
    let ag = Agreement { offer: o.clone(), acceptance: accept(Lend::default()) };
    ag.check().unwrap();
    let lent = vec!["http://203.0.113.7:7790"];
    assert_eq!(ag.relays_for(&street), lent);
    assert_eq!(ag.relays_for(&hill), lent);
    assert_eq!(ag.partner_relays_for(&hill), lent);
    assert!(ag.partner_relays_for(&street).is_empty() && ag.relays_for(&[3; 32]).is_empty());
    // Hill lends its relay back: hill's nodes use both; street's only its own (its admin
    // never saw hill's, an acceptance is recorded as it comes).
    let ag =
        Agreement { offer: o.clone(), acceptance: accept(Lend { relay: true, ..Lend::default() }) };
    assert_eq!(ag.relays_for(&hill), vec!["https://198.51.100.9:443/", "http://203.0.113.7:7790"]);
    assert_eq!(ag.relays_for(&street), lent);
    // No relay lent, none; a side naming the other's relay as its own is not charged for it.
    let plain = resign(&o, Lend { relay: false, ..o.lend }, o.contact.clone());
    let a = Acceptance::sign(&bea, &plain, hill, "hill", Lend::default(), NOW, vec![]);
    let ag = Agreement { offer: plain, acceptance: a };
    assert!(ag.relays_for(&street).is_empty() && ag.relays_for(&hill).is_empty());
    let mine = vec!["http://203.0.113.7:7790".to_string()];
    let a = Acceptance::sign(
        &bea,
        &o,
        hill,
        "hill",
        Lend { relay: true, ..Lend::default() },
        NOW,
        mine,
    );
    assert!(Agreement { offer: o.clone(), acceptance: a }.partner_relays_for(&hill).is_empty());
    // The node tickets are not relays.
    assert_eq!(relays_in(&o.contact).count(), 1);
}

#[test]
fn a_relay_url_a_partner_could_misuse_is_refused_with_why() {
    let ada = admin(1);
    let base = offer(&ada);
    let with = |extra: Vec<String>| {
        let c = [base.contact.clone(), extra].concat();
        let (id, pool, lend, price, exp) =
            (base.id, base.pool, base.lend, base.price, base.expires_ms);
        Offer::sign(&ada, id, pool, "street", lend, price, 365, 30, exp, c)
    };
    for bad in [
        "http://127.0.0.1:7790",
        "http://[::1]:7790",
        "http://0.0.0.0:7790",
        "http://169.254.1.1:7790",
        "http://[fe80::1]:7790",
        "http://224.0.0.251:5353",
        "http://255.255.255.255:7790",
        "http://relay.example:7790",
        "http://user@203.0.113.7:7790",
        "http://203.0.113.7:7790/admin?x=1",
        "http://203.0.113.7",
        "http://203.0.113.7:0",
        "http://203.0.113.7:7790\u{1b}[2J",
        "ftp://203.0.113.7:7790",
    ] {
        assert!(!relay_url_ok(bad), "{bad}");
        if bad.starts_with("http") {
            let e = with(vec![bad.into()]).check(NOW).unwrap_err().to_string();
            assert!(e.contains("relay URLs"), "{bad}: {e}");
        }
    }
    for good in
        ["http://10.97.0.200:7790", "https://[2001:db8::7]:443/", "http://192.168.1.5:7790/"]
    {
        assert!(relay_url_ok(good), "{good}");
    }
    // At most two.
    let three = with((1..=3).map(|i| format!("http://203.0.113.{i}:7790")).collect());
    assert!(three.check(NOW).unwrap_err().to_string().contains("at most 2 relay URLs"));
    with((1..=2).map(|i| format!("http://203.0.113.{i}:7790")).collect()).check(NOW).unwrap();
}
