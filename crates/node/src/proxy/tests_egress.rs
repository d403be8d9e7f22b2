//! Advanced HA in the engine, driven by hand: the ingress forwards by the egress order and moves on
//! when a node stays silent; the egress delivers without a second admission and reports back.

use hatrunk_core::cdr::Disposition;
use hatrunk_core::ha::{HealthView, MemberHealth};
use hatrunk_core::pool::Decision;

use super::tests::{admit_id, answer, engine_with, from, member, sent_to, CARRIER, INVITE, PRIMARY, SECONDARY};
use super::Action;

pub(super) const NODE2: &str = "10.1.0.2:5060";

pub(super) fn two_t_trunk() -> String {
    super::tests::TRUNK.replace("failover_timeout_ms", "advanced_ha = \"2t\"\nfailover_timeout_ms")
}

/// n1 (this node, zone a), n2 (zone b), witness n3; all answering.
pub(super) fn view(quorum: bool) -> HealthView {
    let ms = [member(1, "a", "127.0.0.1:5060"), member(2, "b", NODE2), member(3, "w", "")];
    HealthView { self_id: 1, quorum, members: ms.into_iter().map(|member| MemberHealth { member, alive: true, quorum: true }).collect() }
}

/// Messages to `addr` about call `n` (call 1 keeps retransmitting towards the Primary meanwhile).
pub(super) fn of_call(a: &[Action], addr: &str, n: u32) -> Vec<hatrunk_sip::SipMessage> {
    let cid = format!("call-{n}");
    sent_to(a, addr).into_iter().filter(|m| m.header("Call-ID") == Some(cid.as_str())).collect()
}

/// Call 1 is delivered here (turn 0), call 2 forwarded to n2 (turn 1): the INVITE n2 got.
pub(super) fn forward_second_call(e: &mut super::Engine) -> hatrunk_sip::SipMessage {
    e.on_message(from(CARRIER, &invite(1)), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    e.drain();
    e.on_message(from(CARRIER, &invite(2)), 10);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 11);
    sent_to(&e.drain(), NODE2).remove(0)
}

pub(super) fn invite(n: u32) -> String {
    INVITE.replace("call-1", &format!("call-{n}")).replace("z9hG4bKcarrier1", &format!("z9hG4bKcarrier{n}"))
}

#[tokio::test]
async fn two_t_alternates_zones_and_a_silent_node_is_skipped() {
    let lag = super::tests::Lag::at(false, 7);
    let mut e = super::tests::engine_behind(&two_t_trunk(), std::sync::Arc::new(view(true)), None, None, 1, lag);
    // turn 0: this node's zone, delivered here
    e.on_message(from(CARRIER, &invite(1)), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let a = e.drain();
    assert_eq!(sent_to(&a, PRIMARY).len(), 1);
    assert!(sent_to(&a, NODE2).is_empty());
    // turn 1: zone b, forwarded to n2 with the ingress marker
    e.on_message(from(CARRIER, &invite(2)), 10);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 11);
    let a = e.drain();
    let fwd = sent_to(&a, NODE2);
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].header("X-Hatrunk-Ingress"), Some("n1;applied=7"), "the name and how far its state had come");
    assert!(fwd[0].uri().is_some_and(|u| u.ends_with(NODE2)), "{:?}", fwd[0].uri());
    assert!(sent_to(&a, PRIMARY).is_empty());
    // n2 sends nothing within forward_timeout_ms (800): the call moves to the next choice, here
    e.on_tick(700);
    assert!(of_call(&e.drain(), PRIMARY, 2).is_empty());
    e.on_tick(812);
    // n2 may have delivered it: a second slot before the next choice
    let a = e.drain();
    assert!(of_call(&a, PRIMARY, 2).is_empty());
    assert_eq!(super::tests::admitted_slot(&a).as_deref(), Some("n1/call-2/c1~0"));
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 813);
    let a = e.drain();
    let local = of_call(&a, PRIMARY, 2);
    assert_eq!(local.len(), 1);
    assert!(local[0].header("X-Hatrunk-Ingress").is_none(), "the marker never reaches a PBX");
}

#[tokio::test]
async fn ingress_takes_the_report_out_and_writes_one_cdr() {
    let mut e = engine_with(&two_t_trunk(), view(true));
    let fwd = forward_second_call(&mut e);
    e.on_message(from(NODE2, &answer(&fwd, 100, "Trying", NODE2)), 20);
    e.drain();
    e.on_tick(2000); // the forward timer passed: a node that said 100 is not abandoned
    assert!(of_call(&e.drain(), PRIMARY, 2).is_empty());
    let report = r#"{"attempts":[{"account":"primary","node":"n2","zone":"b","region":"r","target":"sip:1000@10.0.0.1:5060","code":503,"elapsed_ms":3},{"account":"secondary","node":"n2","zone":"b","region":"r","target":"sip:1000@10.0.0.2:5060","code":486,"elapsed_ms":2}],"failover":true,"failover_ms":0,"primary_skipped":false,"disposition":"BUSY","cause":"USER_BUSY"}"#;
    let busy = answer(&fwd, 486, "Busy Here", NODE2).replace("Content-Length", &format!("X-Hatrunk-Report: {report}\r\nContent-Length"));
    e.on_message(from(NODE2, &busy), 2100);
    let a = e.drain();
    let up = sent_to(&a, CARRIER);
    assert_eq!(up.iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![486]);
    assert!(up[0].header("X-Hatrunk-Report").is_none(), "the report never leaves the cluster");
    let cdr = a.iter().find_map(|x| if let Action::Cdr(c) = x { Some(c.clone()) } else { None }).expect("cdr");
    assert_eq!(cdr.disposition, Disposition::Busy);
    assert!(cdr.failover);
    assert_eq!(cdr.attempts.len(), 2);
    assert!(cdr.attempts.iter().all(|x| &*x.node == "n2" && &*x.zone == "b"));
    assert!(a.iter().any(|x| matches!(x, Action::Release { .. })), "the ingress gives the slot back");
}

#[tokio::test]
async fn egress_node_503_moves_the_call_but_a_reported_failure_does_not() {
    let mut e = engine_with(&two_t_trunk(), view(true));
    let fwd = forward_second_call(&mut e);
    e.on_message(from(NODE2, &answer(&fwd, 503, "Service Unavailable", NODE2)), 20);
    let a = e.drain();
    assert_eq!(of_call(&a, PRIMARY, 2).len(), 1, "the node's own 503: next choice");
    assert!(sent_to(&a, CARRIER).is_empty());
}

#[tokio::test]
async fn egress_delivers_without_admission_and_reports() {
    let mut e = engine_with(&two_t_trunk(), view(true));
    let fwd = invite(5).replace("Max-Forwards: 70", "Max-Forwards: 69\r\nX-Hatrunk-Ingress: n2");
    e.on_message(from(NODE2, &fwd), 0);
    let a = e.drain();
    assert!(!a.iter().any(|x| matches!(x, Action::Admit { .. })), "the ingress already holds the slot");
    let to_primary = sent_to(&a, PRIMARY);
    assert_eq!(to_primary.len(), 1);
    assert!(to_primary[0].header("X-Hatrunk-Ingress").is_none());
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 503, "Service Unavailable", PRIMARY)), 5);
    let to_secondary = sent_to(&e.drain(), SECONDARY);
    assert_eq!(to_secondary.len(), 1, "the trunk's mode applies at the egress");
    e.on_message(from(SECONDARY, &answer(&to_secondary[0], 486, "Busy Here", SECONDARY)), 9);
    let a = e.drain();
    let back = sent_to(&a, NODE2);
    let fin = back.iter().find(|m| m.code() == Some(486)).expect("486 back to the ingress");
    let report = fin.header("X-Hatrunk-Report").expect("report");
    assert!(report.contains("\"failover\":true") && report.contains("\"BUSY\""), "{report}");
    assert!(!a.iter().any(|x| matches!(x, Action::Cdr(_) | Action::Release { .. })), "no CDR, no release at the egress");
}

#[tokio::test]
async fn marker_from_a_stranger_is_ignored_and_no_quorum_refuses() {
    let mut e = engine_with(&two_t_trunk(), view(true));
    let fake = invite(6).replace("Max-Forwards: 70", "Max-Forwards: 70\r\nX-Hatrunk-Ingress: n2");
    e.on_message(from(CARRIER, &fake), 0);
    assert!(e.drain().iter().any(|x| matches!(x, Action::Admit { .. })), "a stranger cannot skip admission");
    let mut e = engine_with(&two_t_trunk(), view(false));
    e.on_message(from(CARRIER, &invite(7)), 0);
    let a = e.drain();
    let codes: Vec<_> = sent_to(&a, CARRIER).iter().filter_map(|m| m.code()).collect();
    assert_eq!(codes, vec![100, 503]);
    assert!(sent_to(&a, CARRIER)[1].header("Retry-After").is_some());
    assert!(!a.iter().any(|x| matches!(x, Action::Admit { .. })));
}

#[tokio::test]
async fn an_answered_calls_egress_dying_later_is_not_a_new_choice() {
    let mut e = engine_with(&two_t_trunk(), view(true));
    let fwd = forward_second_call(&mut e);
    e.on_message(from(NODE2, &answer(&fwd, 200, "OK", PRIMARY)), 20);
    assert_eq!(of_call(&e.drain(), CARRIER, 2).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![200]);
    // n2 dies while the call is up: ICMP errors for its address must not re-deliver the call here
    e.on_unreachable(hatrunk_sip::transport::Proto::Udp, NODE2.parse().expect("addr"), 3000);
    let a = e.drain();
    assert!(of_call(&a, PRIMARY, 2).is_empty(), "no second INVITE for an answered call");
    assert!(of_call(&a, CARRIER, 2).is_empty());
}

/// A view the test can change while the engine runs.
pub(super) struct Flip(pub(super) std::sync::Mutex<HealthView>);

impl crate::cluster_health::ClusterView for Flip {
    fn view(&self, _now: u64) -> HealthView {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[tokio::test]
async fn a_node_that_said_100_and_died_is_left_once_detected_down() {
    let flip = std::sync::Arc::new(Flip(std::sync::Mutex::new(view(true))));
    let mut e = super::tests::engine_on(&two_t_trunk(), flip.clone());
    let fwd = forward_second_call(&mut e);
    e.on_message(from(NODE2, &answer(&fwd, 100, "Trying", NODE2)), 20);
    e.drain();
    e.check_egress(500);
    assert!(of_call(&e.drain(), PRIMARY, 2).is_empty(), "n2 is still up");
    flip.0.lock().unwrap_or_else(|p| p.into_inner()).members[1].alive = false;
    e.check_egress(1500);
    let a = e.drain();
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 1500);
    let b = e.drain();
    assert_eq!(of_call(&b, PRIMARY, 2).len(), 1, "moved to the next choice once n2 is known down");
    // n2 may be alive after all (only its SIP or its heartbeats cut off): the setup moved off it is
    // CANCELled there, so the PBX never gets it twice
    let to_n2: Vec<_> = of_call(&a, NODE2, 2).into_iter().filter_map(|m| m.method().cloned()).collect();
    assert_eq!(to_n2, vec![hatrunk_sip::Method::Cancel]);
}

/// The ingress holds the slot of a call it forwarded and gives it back when the egress answers
/// its INVITE. A CANCEL the egress cannot pass on yet (the PBX said nothing) must not be answered
/// 487 at once: the PBX may still answer the retransmitted INVITE (simulation seed 209, a PBX back
/// from a crash). The 487 goes up once the PBX is done with the attempt.
#[tokio::test]
async fn an_egress_answers_a_cancelled_forward_only_when_the_pbx_is_done() {
    let mut e = engine_with(&two_t_trunk(), view(true));
    let fwd = invite(6).replace("Max-Forwards: 70", "Max-Forwards: 69\r\nX-Hatrunk-Ingress: n2");
    e.on_message(from(NODE2, &fwd), 0);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    let cancel = fwd.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    e.on_message(from(NODE2, &cancel), 100);
    let a = e.drain();
    let codes: Vec<u16> = sent_to(&a, NODE2).iter().filter_map(|m| m.code()).collect();
    assert_eq!(codes, vec![200], "the CANCEL's 200, no 487 yet");
    assert!(sent_to(&a, PRIMARY).iter().all(|m| m.method() != Some(&hatrunk_sip::Method::Cancel)), "no CANCEL before a provisional");
    // the PBX answers after all: torn down; its leg is up until our BYE is answered (simulation
    // seed 6), and only then the ingress gets its 487 and may free the slot
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 200, "OK", PRIMARY)), 3000);
    let a = e.drain();
    let back = sent_to(&a, PRIMARY);
    let methods: Vec<_> = back.iter().filter_map(|m| m.method().cloned()).collect();
    assert_eq!(methods, vec![hatrunk_sip::Method::Ack, hatrunk_sip::Method::Bye]);
    assert!(sent_to(&a, NODE2).is_empty(), "no 487 while the PBX's leg is up");
    e.on_message(from(PRIMARY, &answer(&back[1], 200, "OK", PRIMARY)), 3050);
    assert_eq!(sent_to(&e.drain(), NODE2).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![487]);
}

#[tokio::test]
async fn with_a_cluster_secret_only_signed_forwards_skip_admission() {
    let secret = Some("cluster-secret");
    // the ingress signs what it forwards
    let mut ingress = super::tests::engine_signed(&two_t_trunk(), std::sync::Arc::new(view(true)), secret);
    let fwd = forward_second_call(&mut ingress);
    let value = fwd.header("X-Hatrunk-Ingress").expect("marked").to_string();
    assert!(value.starts_with("n1;applied=0;sig="), "{value}");
    // an egress with the same secret takes a signed forward without admission...
    let mut egress = super::tests::engine_signed(&two_t_trunk(), std::sync::Arc::new(view(true)), secret);
    let signed = invite(5).replace(
        "Max-Forwards: 70",
        &format!("Max-Forwards: 69\r\nX-Hatrunk-Ingress: {}", super::forward_sig::ingress_value(secret, "call-5", "n2", Some(1))),
    );
    egress.on_message(from(NODE2, &signed), 0);
    let a = egress.drain();
    assert!(!a.iter().any(|x| matches!(x, Action::Admit { .. })));
    assert_eq!(sent_to(&a, PRIMARY).len(), 1);
    // ...and refuses one from a member's address without a valid signature
    for (n, forged) in
        [(6, "n2".to_string()), (7, "n2;sig=00".into()), (8, super::forward_sig::ingress_value(Some("guess"), "call-8", "n2", Some(1)))]
    {
        let fake = invite(n).replace("Max-Forwards: 70", &format!("Max-Forwards: 69\r\nX-Hatrunk-Ingress: {forged}"));
        egress.on_message(from(NODE2, &fake), 1);
        let a = egress.drain();
        let codes: Vec<_> = sent_to(&a, NODE2).iter().filter_map(|m| m.code()).collect();
        assert_eq!(codes, vec![100, 403], "{forged}");
        assert!(sent_to(&a, PRIMARY).is_empty() && !a.iter().any(|x| matches!(x, Action::Admit { .. })));
    }
}

/// A view that records which members' SIP answered.
struct Recording(HealthView, std::sync::Mutex<Vec<(u64, u64)>>);

impl crate::cluster_health::ClusterView for Recording {
    fn view(&self, _now: u64) -> HealthView {
        self.0.clone()
    }
    fn sip_answered(&self, id: u64, now_ms: u64) {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).push((id, now_ms));
    }
}

#[tokio::test]
async fn members_get_an_options_each_interval_and_only_answers_to_ours_count() {
    let rec = std::sync::Arc::new(Recording(view(true), std::sync::Mutex::default()));
    let mut e = super::tests::engine_on(&two_t_trunk(), rec.clone());
    e.set_member_probe(200);
    e.check_egress(1_000);
    let a = e.drain();
    let sent: Vec<_> = a.iter().filter(|x| matches!(x, Action::Send { .. })).collect();
    assert_eq!(sent.len(), 1, "only n2: not this node, not the witness");
    let opt = sent_to(&a, NODE2).remove(0);
    assert_eq!(opt.method(), Some(&hatrunk_sip::Method::Options));
    e.check_egress(1_100);
    assert!(e.drain().is_empty(), "one per interval");
    // n2's engine answers
    e.on_message(from(NODE2, &answer(&opt, 200, "OK", NODE2)), 1_010);
    assert_eq!(*rec.1.lock().unwrap_or_else(|p| p.into_inner()), vec![(2, 1_010)]);
    assert!(e.drain().is_empty(), "nothing goes anywhere for it");
    // an answer naming another run's token (or a forger's) does not count
    let forged = answer(&opt, 200, "OK", NODE2).replace("z9hG4bKhm", "z9hG4bKhmff");
    e.on_message(from(NODE2, &forged), 1_020);
    assert_eq!(rec.1.lock().unwrap_or_else(|p| p.into_inner()).len(), 1);
    e.check_egress(1_200);
    assert_eq!(sent_to(&e.drain(), NODE2).len(), 1, "the next interval's");
}

/// An engine answers a member's probe itself (its answer is what tells the member it is alive).
#[tokio::test]
async fn a_member_probe_is_answered_200() {
    let rec = std::sync::Arc::new(Recording(view(true), std::sync::Mutex::default()));
    let mut n2 = super::tests::engine_on(&two_t_trunk(), rec.clone());
    n2.set_member_probe(200);
    n2.check_egress(0);
    let opt = sent_to(&n2.drain(), NODE2).remove(0);
    let mut n1 = engine_with(&two_t_trunk(), view(true));
    n1.on_message(from(NODE2, &String::from_utf8_lossy(&opt.to_bytes())), 5);
    let codes: Vec<u16> = sent_to(&n1.drain(), NODE2).iter().filter_map(|m| m.code()).collect();
    assert_eq!(codes, vec![200]);
}

/// 4T, primary region r1 with two nodes (n2, n4), this node n1 in r2: a call admitted just before
/// r1 went silent waits out the forward timer on its first choice only. The second r1 node, seen
/// down by then, is passed over and the call is delivered here.
#[tokio::test]
async fn a_later_choice_seen_down_meanwhile_is_passed_over() {
    const NODE4: &str = "10.1.0.4:5060";
    let at = |id, region: &str, addr| {
        let mut m = member(id, &format!("{region}-a"), addr);
        m.region = region.into();
        MemberHealth { member: m, alive: true, quorum: true }
    };
    let members = vec![at(1, "r2", "127.0.0.1:5060"), at(2, "r1", NODE2), at(4, "r1", NODE4), at(3, "r3", "")];
    let flip = std::sync::Arc::new(Flip(std::sync::Mutex::new(HealthView { self_id: 1, quorum: true, members })));
    let trunk = super::tests::TRUNK.replace("failover_timeout_ms", "advanced_ha = \"4t\"\nprimary_region = \"r1\"\nfailover_timeout_ms");
    let mut e = super::tests::engine_on(&trunk, flip.clone());
    e.on_message(from(CARRIER, &invite(1)), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let a = e.drain();
    let first = if of_call(&a, NODE2, 1).len() == 1 { 1 } else { 2 };
    assert_eq!(of_call(&a, [NODE2, NODE4][first - 1], 1).len(), 1, "forwarded to an r1 node first");
    // r1 goes silent; by the time the forward timer fires the detector has both down
    for m in flip.0.lock().unwrap_or_else(|p| p.into_inner()).members.iter_mut().filter(|m| m.member.region == "r1") {
        m.alive = false;
    }
    e.on_tick(812);
    let a = e.drain();
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 813);
    let b = e.drain();
    assert!(of_call(&b, NODE2, 1).is_empty() && of_call(&b, NODE4, 1).is_empty(), "no second wait on the other r1 node");
    assert_eq!(of_call(&b, PRIMARY, 1).len(), 1, "delivered here at the first timeout");
}
