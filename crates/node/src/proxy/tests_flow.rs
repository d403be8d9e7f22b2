//! Flows to registered PBXes behind NAT (`flow.rs`) driven through the engine: the token in our
//! Record-Route and what follows it, a call routed to the member holding the flow, the relay on
//! that member, and a flow whose member is down.

use std::sync::Arc;

use hatrunk_core::ha::{HealthView, MemberHealth};
use hatrunk_core::pool::Decision;
use hatrunk_sip::transport::Proto;
use hatrunk_sip::Method;

use super::tests::{admit_id, answer, engine_full, from, member, sent_to, CARRIER, INVITE};
use super::{Action, Src};

const DIGEST: &str = "id = \"t\"\nnumbers = [\"1000\"]\nmax_concurrent_calls = 5\n\
     [primary]\nauth = \"digest\"\nusername = \"pbx\"\npassword = \"secret-secret\"\n";
/// Where the PBX's NAT maps its REGISTER, and the private Contact it registered.
const MAPPED: &str = "203.0.113.9:40000";
const CONTACT: &str = "sip:pbx@192.168.1.5:5060";
/// Member 1's SIP address (every engine here listens on it); member 2's.
const NODE1: &str = "127.0.0.1:5060";
const NODE2: &str = "127.0.0.2:5062";

fn view(self_id: u64, one_alive: bool) -> HealthView {
    let ms = [(member(1, "a", NODE1), one_alive), (member(2, "b", NODE2), true)];
    HealthView {
        self_id,
        quorum: true,
        members: ms.into_iter().map(|(member, alive)| MemberHealth { member, alive, quorum: true }).collect(),
    }
}

fn register(e: &mut super::Engine) {
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKr\r\nFrom: <sip:pbx@h>;tag=1\r\n\
         To: <sip:pbx@h>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <{CONTACT}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    let msg = hatrunk_sip::parse::parse(text.as_bytes(), true).expect("register");
    let src = Src { proto: Proto::Udp, addr: MAPPED.parse().expect("addr"), conn: None };
    e.registrar.register("pbx", &msg, src, 0, (60, 3600, 120)).expect("bound");
}

fn call(e: &mut super::Engine) -> Vec<Action> {
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    e.drain()
}

#[tokio::test]
async fn a_local_flow_carries_the_call_and_the_dialog_follows_its_token() {
    let mut e = engine_full(DIGEST, Arc::new(HealthView::single(member(1, "z", "127.0.0.1:5060"))), None, None, 1);
    register(&mut e);
    assert_eq!(e.registrar.lookup("pbx", 1).map(|b| b.expires_ms), Some(120_000), "behind NAT: a short binding");
    let to_pbx = sent_to(&call(&mut e), MAPPED);
    let invite = &to_pbx[0];
    assert_eq!(invite.uri(), Some(CONTACT));
    let rr = invite.header("Record-Route").expect("record-route").to_string();
    assert!(rr.starts_with("<sip:flow-u0-") && rr.contains("@127.0.0.1:5060"), "{rr}");
    // the PBX answers; the carrier's BYE comes back to us with our entry as its Route
    e.on_message(from(MAPPED, &answer(invite, 200, "OK", "192.168.1.5:5060")), 10);
    e.drain();
    let route = rr.split(';').next().unwrap_or("").to_string() + ";lr>";
    let bye = |via: &str, from_tag: &str| {
        format!(
            "BYE {CONTACT} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKbye{from_tag}\r\nRoute: {route}\r\nFrom: <sip:a@b>;tag={from_tag}\r\n\
             To: <sip:1000@h>;tag=pbx\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    e.on_message(from(CARRIER, &bye(CARRIER, "c1")), 20);
    let out = sent_to(&e.drain(), MAPPED);
    assert_eq!(out.iter().filter(|m| m.method() == Some(&Method::Bye)).count(), 1, "the carrier's BYE goes over the flow");
    // a request arriving on the flow itself is the PBX's: routed on (here to its Request-URI)
    let own = bye(MAPPED, "p1").replace(&format!("BYE {CONTACT}"), "BYE sip:caller@10.9.9.9:5060");
    e.on_message(from(MAPPED, &own), 30);
    let a = e.drain();
    assert!(sent_to(&a, MAPPED).iter().all(|m| m.method().is_none()), "not sent back on the flow it came on");
    assert_eq!(sent_to(&a, CARRIER).iter().filter(|m| m.method() == Some(&Method::Bye)).count(), 1);
}

#[tokio::test]
async fn a_call_entering_elsewhere_goes_through_the_member_holding_the_flow() {
    let binding = Some((CONTACT.to_string(), format!("udp:{MAPPED};via=1"), u64::MAX));
    let mut n2 = engine_full(DIGEST, Arc::new(view(2, true)), Some("s3cret"), binding.clone(), 2);
    let to_n1 = sent_to(&call(&mut n2), NODE1);
    let invite = to_n1.iter().find(|m| m.method() == Some(&Method::Invite)).expect("INVITE to node 1");
    assert_eq!(invite.uri(), Some(CONTACT));
    assert!(invite.header("Route").is_some_and(|r| r.starts_with("<sip:flow-u0-") && r.contains(NODE1)), "{:?}", invite.header("Route"));
    assert!(invite.header(super::flow::FLOW_HEADER).is_some_and(|v| v.starts_with("n2;sig=")));

    // node 1 holds the flow: it relays to the PBX's mapping and record-routes with the token
    let mut n1 = engine_full(DIGEST, Arc::new(view(1, true)), Some("s3cret"), None, 1);
    register(&mut n1);
    let bytes = String::from_utf8_lossy(&invite.to_bytes()).into_owned();
    n1.on_message(from(NODE2, &bytes), 5);
    let a = n1.drain();
    let relayed = sent_to(&a, MAPPED);
    assert_eq!(relayed.len(), 1, "relayed once to the flow");
    assert_eq!(relayed[0].header("Route"), None);
    assert_eq!(relayed[0].header(super::flow::FLOW_HEADER), None, "the signature stays inside the cluster");
    assert!(relayed[0].header("Record-Route").is_some_and(|r| r.starts_with("<sip:flow-u0-")));
    assert_eq!(sent_to(&a, NODE2).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![100]);

    // the same INVITE from an address that is no member: refused
    let mut n1b = engine_full(DIGEST, Arc::new(view(1, true)), Some("s3cret"), None, 1);
    register(&mut n1b);
    n1b.on_message(from("10.6.6.6:5060", &bytes.replace(NODE2, "10.6.6.6:5060")), 5);
    let a = n1b.drain();
    assert!(sent_to(&a, MAPPED).is_empty());
    assert_eq!(sent_to(&a, "10.6.6.6:5060").iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![403]);

    // a flow node 1 no longer holds (restarted, the PBX has not registered again): 480
    let mut n1c = engine_full(DIGEST, Arc::new(view(1, true)), Some("s3cret"), None, 1);
    n1c.on_message(from(NODE2, &bytes), 5);
    assert_eq!(sent_to(&n1c.drain(), NODE2).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![480]);
}

#[tokio::test]
async fn a_flow_whose_member_is_down_is_not_registered_now() {
    let binding = Some((CONTACT.to_string(), format!("udp:{MAPPED};via=1"), u64::MAX));
    let mut n2 = engine_full(DIGEST, Arc::new(view(2, false)), Some("s3cret"), binding, 2);
    let a = call(&mut n2);
    assert!(sent_to(&a, NODE1).is_empty() && sent_to(&a, MAPPED).is_empty(), "nothing sent: the NAT would drop it");
    let cdr = a.iter().find_map(|x| if let Action::Cdr(c) = x { Some(c.clone()) } else { None }).expect("cdr");
    assert_eq!(cdr.cause, hatrunk_core::cdr::Cause::UserNotRegistered);
}

#[test]
fn keepalives_go_to_bindings_behind_nat_on_their_interval() {
    let mut e = super::registrar::Registrar::default();
    let msg = |contact: &str| {
        let text = format!(
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5090;branch=z9hG4bKr\r\nFrom: <sip:pbx@h>;tag=1\r\nTo: <sip:pbx@h>\r\n\
             Call-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        );
        hatrunk_sip::parse::parse(text.as_bytes(), true).expect("register")
    };
    let src = |a: &str| Src { proto: Proto::Udp, addr: a.parse().expect("addr"), conn: None };
    e.register("natted", &msg(CONTACT), src(MAPPED), 0, (60, 3600, 120)).expect("bound");
    e.register("direct", &msg("sip:pbx@10.0.0.7:5090"), src("10.0.0.7:5090"), 0, (60, 3600, 120)).expect("bound");
    assert_eq!(e.keepalives_due(0, 20_000).iter().map(|s| s.addr.to_string()).collect::<Vec<_>>(), vec![MAPPED]);
    assert!(e.keepalives_due(19_999, 20_000).is_empty());
    assert_eq!(e.keepalives_due(20_000, 20_000).len(), 1);
    assert!(e.keepalives_due(40_000, 0).is_empty(), "0: off");
}
