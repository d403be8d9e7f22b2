//! Moves and what they leave behind: the second slot an ingress holds for a forward it moved off
//! (`second_slot.rs`), an egress letting go of a forward whose ingress is down, and the slot a call
//! keeps past its end for a silent Primary it failed over from.

use hatrunk_core::pool::Decision;

use super::tests::{admit_id, answer, from, sent_to, CARRIER, PRIMARY, SECONDARY};
use super::tests_egress::{forward_second_call, invite, of_call, two_t_trunk, view, Flip, NODE2};

/// A forward whose node went quiet may have been delivered: its second slot goes back once that
/// forward is over (here its node's late answer, ACKed and BYEd).
#[tokio::test]
async fn a_forward_left_behind_holds_a_second_slot_until_it_is_over() {
    let mut e = super::tests::engine_with(&two_t_trunk(), view(true));
    let fwd = forward_second_call(&mut e);
    e.on_tick(812);
    let a = e.drain();
    assert_eq!(super::tests::admitted_slot(&a).as_deref(), Some("n1/call-2/c1~0"));
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 813);
    assert_eq!(of_call(&e.drain(), PRIMARY, 2).len(), 1, "delivered here once the second slot is held");
    // n2's answer comes late: torn down, and the second slot waits for the BYE's answer
    e.on_message(from(NODE2, &answer(&fwd, 200, "OK", PRIMARY)), 900);
    let a = e.drain();
    let back = of_call(&a, NODE2, 2);
    assert_eq!(
        back.iter().filter_map(|m| m.method().cloned()).collect::<Vec<_>>(),
        vec![hatrunk_sip::Method::Ack, hatrunk_sip::Method::Bye]
    );
    assert!(of_call(&a, CARRIER, 2).is_empty(), "the caller never sees it");
    assert!(super::tests::released(&a).is_empty());
    let bye = back.into_iter().find(|m| m.method() == Some(&hatrunk_sip::Method::Bye)).expect("bye");
    e.on_message(from(NODE2, &answer(&bye, 200, "OK", NODE2)), 950);
    assert_eq!(super::tests::released(&e.drain()), vec!["n1/call-2/c1~0".to_string()]);
}

/// No slot for the forward left behind (the trunk is full counting it): the call is refused with
/// 503 rather than delivered a second time, and its own slot stays until that forward is over.
#[tokio::test]
async fn no_second_slot_no_move_off_a_node_that_may_have_delivered() {
    let mut e = super::tests::engine_with(&two_t_trunk(), view(true));
    forward_second_call(&mut e);
    e.on_tick(812);
    let ticket = admit_id(&e.drain());
    e.on_admitted(ticket, Ok(Decision::Full { used: 5, limit: 5 }), 813);
    let a = e.drain();
    assert!(of_call(&a, PRIMARY, 2).is_empty());
    assert_eq!(of_call(&a, CARRIER, 2).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![503]);
    assert!(super::tests::released(&a).is_empty(), "the call's slot is kept for the forward");
    e.on_tick(800 + 2 * hatrunk_sip::transaction::TIMEOUT + 100);
    assert!(super::tests::released(&e.drain()).contains(&"n1/call-2/c1".to_string()), "until it is certainly over");
}

/// The ingress of a forwarded call is down (it moved the call elsewhere, or died with it): the egress
/// cancels its attempt towards the PBX as if the ingress had sent CANCEL, instead of letting the PBX
/// ring for Timer C while the ingress's second slot for it runs out.
#[tokio::test]
async fn an_egress_cancels_a_forward_whose_ingress_is_down() {
    let flip = std::sync::Arc::new(Flip(std::sync::Mutex::new(view(true))));
    let mut e = super::tests::engine_on(&two_t_trunk(), flip.clone());
    let fwd = invite(6).replace("Max-Forwards: 70", "Max-Forwards: 69\r\nX-Hatrunk-Ingress: n2");
    e.on_message(from(NODE2, &fwd), 0);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 180, "Ringing", PRIMARY)), 50);
    e.drain();
    e.check_egress(500);
    assert!(sent_to(&e.drain(), PRIMARY).is_empty(), "n2 is up: the PBX keeps ringing");
    flip.0.lock().unwrap_or_else(|p| p.into_inner()).members[1].alive = false;
    e.check_egress(1500);
    let a = e.drain();
    let methods: Vec<_> = sent_to(&a, PRIMARY).iter().filter_map(|m| m.method().cloned()).collect();
    assert_eq!(methods, vec![hatrunk_sip::Method::Cancel]);
    // the ingress hears it at once, in case it is alive after all (a one-way cut)
    let told = sent_to(&a, NODE2);
    assert_eq!(told.iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![503]);
    assert_eq!(told[0].header(super::egress::UNSETTLED_HEADER), Some("1"), "its attempt may still be answered");
    e.check_egress(1700);
    assert!(sent_to(&e.drain(), PRIMARY).is_empty(), "cancelled once");
}

/// An egress let go of our forward while its own attempt may still be answered (503 marked
/// unsettled): the call moves on as off a silent node, with a second slot for what it left behind.
#[tokio::test]
async fn an_egress_letting_go_unsettled_costs_a_second_slot_before_the_move() {
    let mut e = super::tests::engine_with(&two_t_trunk(), view(true));
    let fwd = forward_second_call(&mut e);
    e.on_message(from(NODE2, &answer(&fwd, 100, "Trying", NODE2)), 20);
    e.drain();
    let mut gone = answer(&fwd, 503, "Service Unavailable", NODE2);
    gone = gone.replace("Content-Length", &format!("{}: 1\r\nContent-Length", super::egress::UNSETTLED_HEADER));
    e.on_message(from(NODE2, &gone), 300);
    let a = e.drain();
    assert_eq!(super::tests::admitted_slot(&a).as_deref(), Some("n1/call-2/c1~0"), "a second slot first");
    assert!(of_call(&a, PRIMARY, 2).is_empty());
    assert!(of_call(&a, CARRIER, 2).iter().all(|m| m.code() != Some(503)), "not passed to the caller");
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 301);
    assert_eq!(of_call(&e.drain(), PRIMARY, 2).len(), 1, "then delivered here");
}

/// The call failed over past a silent Primary and ended on the Secondary: the Primary may still
/// answer (seed 2400404: its 200 was lost and it was up after the call), so the slot stays until
/// that answer is torn down or can no longer come (Timer B plus the PBX's 64 x T1).
#[tokio::test]
async fn a_call_past_a_silent_primary_keeps_its_slot_until_the_primary_cannot_answer() {
    use hatrunk_sip::transaction::TIMEOUT;
    use hatrunk_sip::Method;
    for late_answer in [true, false] {
        let mut e = super::tests::engine().await;
        e.on_message(from(CARRIER, super::tests::INVITE), 0);
        let id = admit_id(&e.drain());
        e.on_admitted(id, Ok(Decision::Granted), 1);
        let to_primary = sent_to(&e.drain(), PRIMARY);
        e.on_tick(1001);
        let to_secondary = sent_to(&e.drain(), SECONDARY);
        e.on_message(from(SECONDARY, &answer(&to_secondary[0], 200, "OK", SECONDARY)), 1100);
        e.drain();
        let route = to_secondary[0].header("Record-Route").expect("record-route").to_string();
        let bye = format!(
            "BYE sip:{SECONDARY} SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKbye1\nRoute: {route}\nFrom: <sip:caller@10.9.9.9>;tag=c1\nTo: <sip:1000@127.0.0.1>;tag=pbx\nCall-ID: call-1\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n"
        );
        e.on_message(from(CARRIER, &bye), 5000);
        let to_pbx = sent_to(&e.drain(), SECONDARY);
        let bye_ok = String::from_utf8_lossy(&to_pbx[0].make_response(200, "OK", None).to_bytes()).into_owned();
        e.on_message(from(SECONDARY, &bye_ok), 5010);
        assert!(super::tests::released(&e.drain()).is_empty(), "the call is over but the Primary may answer yet");
        if late_answer {
            e.on_message(from(PRIMARY, &answer(&to_primary[0], 200, "OK", PRIMARY)), 6000);
            let back = sent_to(&e.drain(), PRIMARY);
            assert_eq!(back.iter().filter_map(|m| m.method().cloned()).collect::<Vec<_>>(), vec![Method::Ack, Method::Bye]);
            let bye = back.into_iter().find(|m| m.method() == Some(&Method::Bye)).expect("bye");
            e.on_message(from(PRIMARY, &answer(&bye, 200, "OK", PRIMARY)), 6050);
            assert_eq!(super::tests::released(&e.drain()).len(), 1, "torn down: the slot goes");
        } else {
            e.on_tick(1 + 2 * TIMEOUT - 10);
            assert!(super::tests::released(&e.drain()).is_empty());
            e.on_tick(1 + 2 * TIMEOUT + 10);
            assert_eq!(super::tests::released(&e.drain()).len(), 1, "it cannot answer any more");
        }
    }
}
