//! What the engine does as time passes, on simulated time: an answered call that reaches the trunk's
//! maximum duration without a BYE, a session timer that runs out, and a registration that is not
//! refreshed. (End-to-end tests could only wait these out in real time.)

use hatrunk_core::cdr::Cause;
use hatrunk_core::ha::HealthView;
use hatrunk_core::pool::Decision;
use hatrunk_core::trunk::Role;
use hatrunk_sip::digest::Algorithm;
use hatrunk_sip::Method;

use super::tests::{admit_id, answer, engine_with, from, member, sent_to, CARRIER, INVITE, PRIMARY, TRUNK};
use super::Action;

fn view() -> HealthView {
    HealthView::single(member(1, "z", "127.0.0.1:5060"))
}

fn releases(a: &[Action]) -> usize {
    a.iter().filter(|x| matches!(x, Action::Release { .. })).count()
}

#[tokio::test]
async fn an_answered_call_without_a_bye_gives_its_slot_back_at_the_maximum_duration() {
    let trunk = TRUNK.replace("failover_timeout_ms = 1000\n", "failover_timeout_ms = 1000\nmax_call_duration_s = 60\n");
    let mut e = engine_with(&trunk, view());
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 200, "OK", PRIMARY)), 1_000);
    assert_eq!(sent_to(&e.drain(), CARRIER)[0].code(), Some(200));
    // the caller's BYE never comes: the slot is held for exactly max_call_duration_s
    e.on_tick(60_999);
    assert_eq!(releases(&e.drain()), 0, "not before the maximum duration");
    assert_eq!(e.next_deadline(), Some(61_000), "the next thing due is the call's end");
    e.on_tick(61_000);
    let a = e.drain();
    assert_eq!(releases(&a), 1, "the slot goes back at the maximum duration");
    let cdr = a.iter().find_map(|x| if let Action::Cdr(c) = x { Some(c) } else { None }).expect("a CDR");
    assert_eq!(cdr.cause, Cause::MaxDurationExceeded);
    assert_eq!((cdr.answer_ms, cdr.end_ms), (Some(1_000), 61_000));
    // a BYE arriving after that frees nothing more
    let route = to_primary[0].header("Record-Route").expect("record-route").to_string();
    let bye = format!(
        "BYE sip:{PRIMARY} SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKlate\nRoute: {route}\nFrom: <sip:caller@10.9.9.9>;tag=c1\n\
         To: <sip:1000@127.0.0.1>;tag=pbx\nCall-ID: call-1\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n"
    );
    e.on_message(from(CARRIER, &bye), 62_000);
    assert_eq!(releases(&e.drain()), 0);
}

/// A session timer (RFC 4028) set by the answer: a refresh (re-INVITE answered 2xx) moves its end;
/// with no refresh and no BYE after that, the node sends BYE to both sides, writes the CDR
/// (`SESSION_EXPIRED`) and gives the slot back, long before `max_call_duration_s`.
#[tokio::test]
async fn a_session_not_refreshed_in_time_is_ended_on_both_sides() {
    let mut e = engine_with(TRUNK, view());
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    let ok = answer(&to_primary[0], 200, "OK", PRIMARY).replace("Content-Length", "Session-Expires: 90;refresher=uac\r\nContent-Length");
    assert!(ok.contains("Session-Expires"));
    e.on_message(from(PRIMARY, &ok), 1_000);
    assert_eq!(sent_to(&e.drain(), CARRIER)[0].code(), Some(200));
    // the caller refreshes at 60 s: a re-INVITE, answered 2xx by the PBX
    let route = to_primary[0].header("Record-Route").expect("record-route").to_string();
    let reinvite = format!(
        "INVITE sip:{PRIMARY} SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKre1\nRoute: {route}\nFrom: <sip:caller@10.9.9.9>;tag=c1\n\
         To: <sip:1000@127.0.0.1>;tag=pbx\nCall-ID: call-1\nCSeq: 7 INVITE\nContact: <sip:caller@10.9.9.9:5060>\nSession-Expires: 90;refresher=uac\n\
         Max-Forwards: 70\nContent-Length: 0\n\n"
    );
    e.on_message(from(CARRIER, &reinvite), 60_000);
    let relayed = sent_to(&e.drain(), PRIMARY);
    assert_eq!(relayed.len(), 1);
    e.on_message(
        from(PRIMARY, &answer(&relayed[0], 200, "OK", PRIMARY).replace("Content-Length", "Session-Expires: 90\r\nContent-Length")),
        60_050,
    );
    e.drain();
    e.on_tick(91_000);
    let a = e.drain();
    assert_eq!(releases(&a), 0, "refreshed at 60 s: not over at 91 s");
    assert!(sent_to(&a, PRIMARY).is_empty());
    // then nothing: over at 60 s + 90 s
    e.on_tick(150_049);
    assert_eq!(releases(&e.drain()), 0);
    e.on_tick(150_050);
    let a = e.drain();
    assert_eq!(releases(&a), 1, "the slot goes back");
    let cdr = a.iter().find_map(|x| if let Action::Cdr(c) = x { Some(c) } else { None }).expect("a CDR");
    assert_eq!(cdr.cause, Cause::SessionExpired);
    let to_pbx = sent_to(&a, PRIMARY);
    assert_eq!(to_pbx.iter().filter_map(|m| m.method().cloned()).collect::<Vec<_>>(), vec![Method::Bye]);
    assert_eq!(to_pbx[0].header("CSeq"), Some("8 BYE"), "after the caller's last request");
    assert!(to_pbx[0].header("To").is_some_and(|t| t.contains("tag=pbx")), "{:?}", to_pbx[0].header("To"));
    let to_caller = sent_to(&a, CARRIER);
    assert_eq!(to_caller.iter().filter_map(|m| m.method().cloned()).collect::<Vec<_>>(), vec![Method::Bye]);
    assert!(to_caller[0].header("From").is_some_and(|f| f.contains("tag=pbx")), "from the PBX's side");
    assert_eq!(to_caller[0].uri(), Some("sip:caller@10.9.9.9:5060"), "to the caller's Contact");
}

/// Issue 19: a caller that negotiated `Session-Expires: 90` and refreshes every 45 s keeps its call
/// for 5 minutes; when the refreshes stop, the call ends 90 s after the last one.
#[tokio::test]
async fn a_session_refreshed_every_45_s_lives_for_five_minutes() {
    let mut e = engine_with(TRUNK, view());
    let invite = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 70\nSession-Expires: 90;refresher=uac\nSupported: timer");
    e.on_message(from(CARRIER, &invite), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    let ok = answer(&to_primary[0], 200, "OK", PRIMARY).replace("Content-Length", "Session-Expires: 90;refresher=uac\r\nContent-Length");
    e.on_message(from(PRIMARY, &ok), 1_000);
    e.drain();
    let route = to_primary[0].header("Record-Route").expect("record-route").to_string();
    let mut last = 1_000;
    for (n, at) in (45_000..=300_000).step_by(45_000).enumerate() {
        e.on_tick(at - 1);
        assert_eq!(releases(&e.drain()), 0, "alive before refresh {n}");
        let reinvite = format!(
            "INVITE sip:{PRIMARY} SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKre{n}\nRoute: {route}\nFrom: <sip:caller@10.9.9.9>;tag=c1\n\
             To: <sip:1000@127.0.0.1>;tag=pbx\nCall-ID: call-1\nCSeq: {} INVITE\nContact: <sip:caller@10.9.9.9:5060>\nSession-Expires: 90;refresher=uac\n\
             Max-Forwards: 70\nContent-Length: 0\n\n",
            10 + n
        );
        e.on_message(from(CARRIER, &reinvite), at);
        let relayed = sent_to(&e.drain(), PRIMARY);
        let ok = answer(&relayed[0], 200, "OK", PRIMARY).replace("Content-Length", "Session-Expires: 90;refresher=uac\r\nContent-Length");
        e.on_message(from(PRIMARY, &ok), at + 20);
        e.drain();
        last = at + 20;
    }
    assert!(last >= 270_000, "refreshed for five minutes");
    e.on_tick(last + 89_999);
    assert_eq!(releases(&e.drain()), 0);
    e.on_tick(last + 90_000);
    assert_eq!(releases(&e.drain()), 1, "90 s after the last refresh");
}

/// Without `Session-Expires` in the answer nothing is timed but the maximum duration.
#[tokio::test]
async fn no_session_timer_without_session_expires() {
    let mut e = engine_with(TRUNK, view());
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 200, "OK", PRIMARY)), 1_000);
    e.drain();
    e.on_tick(3_600_000);
    assert_eq!(releases(&e.drain()), 0);
}

const PBX: &str = "10.0.0.7:5090";

fn register(n: u32, expires: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {PBX};branch=z9hG4bKreg{n}\nFrom: <sip:pbx@127.0.0.1>;tag=r{n}\n\
         To: <sip:pbx@127.0.0.1>\nCall-ID: reg\nCSeq: {n} REGISTER\nContact: <sip:pbx@{PBX}>\nExpires: {expires}\nMax-Forwards: 70\n\
         {auth}Content-Length: 0\n\n"
    )
}

/// The answer to a challenge, as a PBX computes it (RFC 2617 with qop=auth).
fn authorization(challenge: &str) -> String {
    let nonce = challenge.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce");
    let ha1 = hatrunk_core::credentials::DigestHa1::derive("pbx", "s3cret-pass").md5;
    let ha2 = Algorithm::Md5.hash("REGISTER:sip:127.0.0.1");
    let response = Algorithm::Md5.hash(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
    format!(
        "Authorization: Digest username=\"pbx\", realm=\"hatrunk\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{response}\", qop=auth, nc=00000001, cnonce=\"c0ffee\"\n"
    )
}

#[tokio::test]
async fn a_registration_not_refreshed_stops_taking_calls_when_it_expires() {
    let trunk = "id = \"t\"\nnumbers = [\"1000\"]\nmax_concurrent_calls = 5\nmode = \"only-primary\"\n\
                 [primary]\nauth = \"digest\"\nusername = \"pbx\"\npassword = \"s3cret-pass\"\n";
    let mut e = engine_with(trunk, view());
    e.on_message(from(PBX, &register(1, 60, "")), 1_000);
    let challenge = sent_to(&e.drain(), PBX).pop().expect("401");
    assert_eq!(challenge.code(), Some(401));
    let auth = authorization(challenge.header("WWW-Authenticate").expect("challenge"));
    e.on_message(from(PBX, &register(2, 60, &auth)), 1_000);
    let a = e.drain();
    let ok = sent_to(&a, PBX).pop().expect("a reply");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.header("Contact"), Some(format!("<sip:pbx@{PBX}>;expires=60").as_str()));
    assert!(a.iter().any(|x| matches!(x, Action::Register { expires_ms: 61_000, .. })), "replicated with its expiry");
    assert_eq!(e.status.account("t", Role::Primary).registered, Some(format!("sip:pbx@{PBX}")));
    // a call just before the binding expires reaches the PBX
    let call = |n: u32| INVITE.replace("call-1", &format!("call-{n}")).replace("carrier1", &format!("carrier{n}"));
    e.on_message(from(CARRIER, &call(1)), 60_999);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 60_999);
    let sent = sent_to(&e.drain(), PBX);
    assert_eq!(sent.iter().filter_map(|m| m.method().cloned()).collect::<Vec<_>>(), vec![Method::Invite]);
    // not refreshed: at 61 s it is gone, from the call path and from what `trunk get` shows
    e.on_tick(61_000);
    e.drain();
    assert_eq!(e.status.account("t", Role::Primary).registered, None, "an expired binding is not shown");
    e.on_message(from(CARRIER, &call(2)), 61_000);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 61_000);
    let a = e.drain();
    assert!(sent_to(&a, PBX).is_empty(), "nothing goes to an expired binding");
    assert_eq!(sent_to(&a, CARRIER).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![480]);
    let cdr = a.iter().find_map(|x| if let Action::Cdr(c) = x { Some(c) } else { None }).expect("a CDR");
    assert_eq!(cdr.cause, Cause::UserNotRegistered);
}
